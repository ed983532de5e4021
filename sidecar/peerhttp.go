package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// The size limits of the node-to-node messages, request and answer, each
// with its reason. A delivery's request is bounded by the body limit
// (--max-body-bytes, as any submit), a release's answer and a restore's
// request by the hand-off limit (--max-handoff-bytes: a participant's whole
// state).
const (
	// participantRefLimit bounds a release, confirm or takeover request:
	// one participant id and one node name.
	participantRefLimit = 64 << 10
	// deliverAnswerLimit bounds a delivery's result: counts, and at worst
	// the ids of a batch's recipients that failed or were not found.
	deliverAnswerLimit = peerAnswerLimit
	// statusAnswerLimit bounds the answers that are {"status":"ok"} or an
	// error body (confirm, restore, takeover, membership).
	statusAnswerLimit = peerAnswerLimit
	// directoryPushAnswerLimit bounds a directory push's answer, read only
	// to tell a digest mismatch from an unknown node.
	directoryPushAnswerLimit = 4 << 10
	// lookupAnswerLimit bounds a directory lookup's answer: the records a
	// peer keeps for the keys asked, as large as a push may be.
	lookupAnswerLimit = maxDirectoryPushBytes
)

// httpPeers carries the node-to-node protocol (Peers) over HTTP: each
// message a POST to its endpoint with the cluster key as bearer, through
// the node's pooled peer connections.
type httpPeers struct {
	client     *peerClient
	cluster    membership.Cluster // node names to URLs
	clusterKey string
	stateLimit int64 // --max-handoff-bytes: a release's answer
}

var _ routing.Peers = (*httpPeers)(nil)

// url is path on node, or ErrNotMember.
func (h *httpPeers) url(node, path string) (string, error) {
	base, ok := h.cluster.NodeURL(node)
	if !ok {
		return "", routing.ErrNotMember
	}
	return strings.TrimSuffix(base, "/") + path, nil
}

func (h *httpPeers) Deliver(ctx context.Context, node string, req routing.PeerDelivery, hops int) (routing.DeliverReply, error) {
	base, ok := h.cluster.NodeURL(node)
	if !ok {
		return routing.DeliverReply{}, routing.ErrNotMember
	}
	body, _ := json.Marshal(req)
	ans, err := h.client.postUpTo(ctx, deliveriesURL(base), body, h.clusterKey, hops, deliverAnswerLimit)
	if err != nil {
		return routing.DeliverReply{Status: ans.Status}, err
	}
	if ans.Status != http.StatusOK {
		return routing.DeliverReply{Status: ans.Status, Refusal: ans.Body}, nil
	}
	var res routing.DeliveryResult
	_ = json.Unmarshal(ans.Body, &res)
	return routing.DeliverReply{Status: ans.Status, Result: res}, nil
}

func (h *httpPeers) Release(ctx context.Context, node string, ref routing.ParticipantRef) (routing.ReleaseReply, error) {
	u, err := h.url(node, releasePath)
	if err != nil {
		return routing.ReleaseReply{}, err
	}
	body, _ := json.Marshal(ref)
	// A cut answer is a read error, which postUpTo retries: node answers
	// the state it holds for this node again.
	ans, err := h.client.postUpTo(ctx, u, body, h.clusterKey, 0, h.stateLimit)
	if err != nil || ans.Status != http.StatusOK {
		return routing.ReleaseReply{Status: ans.Status}, err
	}
	var st ws.ParticipantState
	if err := json.Unmarshal(ans.Body, &st); err != nil {
		return routing.ReleaseReply{}, fmt.Errorf("the released state does not decode: %w", err)
	}
	return routing.ReleaseReply{Status: http.StatusOK, State: &st}, nil
}

func (h *httpPeers) Confirm(ctx context.Context, node string, ref routing.ParticipantRef) error {
	u, err := h.url(node, releasePath)
	if err != nil {
		return err
	}
	ref.Confirm = true
	body, _ := json.Marshal(ref)
	_, err = h.client.postUpTo(ctx, u, body, h.clusterKey, 0, statusAnswerLimit)
	return err
}

func (h *httpPeers) Restore(ctx context.Context, node string, req routing.RestoreRequest) (int, error) {
	u, err := h.url(node, restorePath)
	if err != nil {
		return 0, err
	}
	body, _ := json.Marshal(req)
	ans, err := h.client.postUpTo(ctx, u, body, h.clusterKey, 0, statusAnswerLimit)
	return ans.Status, err
}

func (h *httpPeers) Takeover(ctx context.Context, node string, ref routing.ParticipantRef) (int, error) {
	u, err := h.url(node, takeoverPath)
	if err != nil {
		return 0, err
	}
	body, _ := json.Marshal(ref)
	ans, err := h.client.sendWithin(ctx, http.MethodPost, u, body, h.clusterKey, 0, statusAnswerLimit)
	return ans.Status, err
}

func (h *httpPeers) Membership(ctx context.Context, node, method, id, session string, hops int) (routing.MembershipReply, error) {
	u, err := h.url(node, "/v1/gateway/sessions/"+pathEscape(session)+"/participants/"+pathEscape(id))
	if err != nil {
		return routing.MembershipReply{}, err
	}
	ans, err := h.client.send(ctx, method, u, nil, h.clusterKey, hops, statusAnswerLimit)
	if err != nil || ans.Status == http.StatusOK {
		return routing.MembershipReply{Status: ans.Status}, err
	}
	var e wire.Error
	if json.Unmarshal(ans.Body, &e) == nil && e.Code != "" {
		e.Status = ans.Status
		return routing.MembershipReply{Status: ans.Status, Err: &e}, nil
	}
	return routing.MembershipReply{Status: ans.Status}, nil
}

// signatureHeader carries a pushed directory message's signature by the
// node it names (membership.Gossip.Sign).
const signatureHeader = "Switchyard-Signature"

// PushDirectory posts a directory message, signed by this node, to a peer
// with the cluster key and returns once the peer applied it.
func (h *httpPeers) PushDirectory(ctx context.Context, peerURL string, msg []byte, sig string) error {
	ctx, cancel := context.WithTimeout(ctx, h.client.attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(peerURL, "/")+directoryPath, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(signatureHeader, sig)
	if h.clusterKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.clusterKey)
	}
	resp, err := h.client.directory.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, directoryPushAnswerLimit))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusConflict:
		if bytes.Contains(body, []byte(`"digest_mismatch"`)) { // the peer misses some of our records
			return fmt.Errorf("peer answered %d: %w", resp.StatusCode, membership.ErrDigestMismatch)
		}
		return fmt.Errorf("peer answered %d: %w", resp.StatusCode, membership.ErrUnknownNode) // it has not heard of this node yet
	}
	return fmt.Errorf("peer answered %d: %s", resp.StatusCode, wire.Truncate(body))
}

// FetchDirectory asks a peer, with the cluster key, for directory
// records it keeps (membership.Gossip.HandleLookup answers there).
func (h *httpPeers) FetchDirectory(ctx context.Context, peerURL string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, h.client.attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(peerURL, "/")+lookupPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.clusterKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.clusterKey)
	}
	resp, err := h.client.directory.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, lookupAnswerLimit))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer answered %d: %s", resp.StatusCode, wire.Truncate(ans))
	}
	return ans, nil
}

// httpGateways carries deliveries to external gateways (ExternalGateways)
// over HTTP, with the external key as bearer, through the node's pooled
// peer connections.
type httpGateways struct {
	client      *peerClient
	externalKey string
}

var _ routing.ExternalGateways = httpGateways{}

func (h httpGateways) Deliver(ctx context.Context, gatewayURL string, body []byte) (int, error) {
	ans, err := h.client.post(ctx, deliveriesURL(gatewayURL), body, h.externalKey, 0)
	return ans.Status, err
}
