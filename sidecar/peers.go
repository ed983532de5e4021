package sidecar

import (
	"context"
	"errors"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/ws"
)

// Peers is the node-to-node protocol as the routing core sees it: one
// method per message, typed both ways. The core (Gateway) reaches other
// nodes only through it; httpPeers carries it over HTTP with the cluster
// key, and the handlers of /v1/gateway/deliveries and /v1/gateway/cluster/*
// decode the same messages on the other side. Each message has its own size
// limits (see the constants below); a transport refuses an answer past its
// limit with errAnswerTooLarge, never truncates it.
//
// Nodes are named as membership names them; a transport that cannot reach
// a name (not a member) answers errNotMember.
type Peers interface {
	// Deliver hands an event to the recipients homed on node, hops being
	// the forwards so far (this one included).
	Deliver(ctx context.Context, node string, req peerDelivery, hops int) (deliverReply, error)
	// Release asks node to hand a participant over: its state, or the
	// status node refused with. The answer is bounded by the hand-off
	// limit (--max-handoff-bytes). A cut answer is asked for again.
	Release(ctx context.Context, node string, ref participantRef) (releaseReply, error)
	// Confirm tells node the released state is installed here.
	Confirm(ctx context.Context, node string, ref participantRef) error
	// Restore gives a participant back to node after a failed transfer.
	Restore(ctx context.Context, node string, req restoreRequest) (int, error)
	// Takeover asks node to take a participant over from this (draining)
	// node: one attempt, bounded by ctx alone.
	Takeover(ctx context.Context, node string, ref participantRef) (int, error)
	// Membership repeats a PUT or DELETE of a session participant on the
	// node that hosts it: the status, and the error it answered.
	Membership(ctx context.Context, node, method, id, session string, hops int) (membershipReply, error)
	// PushDirectory and FetchDirectory carry the directory's messages
	// (membership encodes and signs them) to a peer's URL.
	PushDirectory(ctx context.Context, peerURL string, msg []byte, sig string) error
	FetchDirectory(ctx context.Context, peerURL string, body []byte) ([]byte, error)
}

// ExternalGateways carries deliveries to gateways outside the cluster: a
// delivery's body, shaped as the API reference shapes it, posted to the
// deliveries endpoint under a gateway's base URL; the answer is its status.
type ExternalGateways interface {
	Deliver(ctx context.Context, gatewayURL string, body []byte) (status int, err error)
}

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

// errNotMember: the node named is not a member of the cluster (any more),
// so no transport can reach it.
var errNotMember = errors.New("not a member of the cluster")

// deliverReply is a peer's answer to a delivery: its status, the result
// when it is 200, and the answer as received otherwise (for the log).
type deliverReply struct {
	Status  int
	Result  DeliveryResult
	Refusal []byte
}

// releaseReply is a peer's answer to a release: the participant's state,
// or nil and the status it refused with (404 not there, 409 attached).
type releaseReply struct {
	Status int
	State  *ws.ParticipantState
}

// membershipReply is a peer's answer to a forwarded PUT or DELETE of a
// session participant: its status, and the error it answered (nil when it
// answered 200 or no error body).
type membershipReply struct {
	Status int
	Err    *wire.Error
}
