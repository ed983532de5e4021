package routing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// MaxHops bounds forwarding: a node forwards a delivery for a participant
// homed elsewhere only while its hops are below it, so no event travels
// more than two hops.
const MaxHops = 2

// route is where one event goes: participants homed here, participants
// homed on peers (by node), and external participants behind gateways.
type route struct {
	local    []*ws.Participant
	peers    map[string][]string
	external []membership.Entry
	// freshID: the event_id was assigned here for this submit and the
	// route is local only, so no mailbox can have it yet: local mailboxes
	// record it without looking it up (see ws.Event.WithFreshID).
	freshID bool
}

func (r *route) empty() bool {
	return len(r.local) == 0 && len(r.peers) == 0 && len(r.external) == 0
}

// resolve finds ev's recipients across the cluster: every participant of its
// session but the sender, or its recipient_id alone. The members on other
// nodes come from the directory's owners of the session (or of the
// recipient); when none of them answers, the submit fails as if their
// nodes were unreachable (ErrDirectory).
func (g *Gateway) resolve(ctx context.Context, ev wire.Event) (route, error) {
	var r route
	r.local = g.localTargets(ev)
	var (
		entries []membership.Entry
		err     error
	)
	switch {
	case ev.RecipientID != "" && ev.SessionID != "":
		var members []membership.Entry
		members, err = g.cluster.Session(ctx, ev.SessionID, "")
		for _, e := range members {
			if e.Participant == ev.RecipientID {
				entries = append(entries, e)
			}
		}
	case ev.RecipientID != "":
		entries, err = g.cluster.Participant(ctx, ev.RecipientID)
	default:
		entries, err = g.cluster.Session(ctx, ev.SessionID, g.self) // hosted here: r.local
	}
	if err != nil {
		return r, ErrDirectory(ev.RecipientID)
	}
	// A participant that moved here while the directory answered is in
	// neither look: the first found it elsewhere still, and the directory
	// leaves out this node's participants (they are local). Look again;
	// one that moved away meanwhile is followed by the delivery (Gone).
	r.local = unionParticipants(r.local, g.localTargets(ev))
	seenExternal := map[string]bool{}
	for _, e := range entries {
		switch {
		case e.Participant == ev.SenderID && ev.RecipientID == "":
			// the sender does not get its own event
		case e.GatewayURL != "":
			if !seenExternal[e.Participant] && g.hub.Lookup(e.Participant) == nil && g.externalRoutable(e) {
				seenExternal[e.Participant] = true
				r.external = append(r.external, e)
			}
		case e.Node != g.self:
			if r.peers == nil {
				r.peers = map[string][]string{}
			}
			r.peers[e.Node] = append(r.peers[e.Node], e.Participant)
		}
	}
	return r, nil
}

// unionParticipants is a followed by the participants of b missing from
// it. a is not modified (it may be the hub's shared slice of a session);
// when b adds nothing, a itself is returned.
func unionParticipants(a, b []*ws.Participant) []*ws.Participant {
	if len(b) == 0 || len(a) == len(b) && &a[0] == &b[0] {
		return a // the same look: the usual case
	}
	var out []*ws.Participant
	for _, p := range b {
		if !slices.Contains(a, p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return a
	}
	return append(slices.Clone(a), out...)
}

// outcome tallies what happened to one event.
type outcome struct {
	counts deliveryCounts
	failed []string
}

// deliveryCounts say how the recipients got an event: live (attached),
// queued (offline, within their window) or earlier (a retry they already
// had).
type deliveryCounts struct {
	Live       int `json:"live"`
	Queued     int `json:"queued"`
	Duplicates int `json:"duplicates"`
}

func (c deliveryCounts) total() int { return c.Live + c.Queued + c.Duplicates }

func (c *deliveryCounts) add(o deliveryCounts) {
	c.Live += o.Live
	c.Queued += o.Queued
	c.Duplicates += o.Duplicates
}

func (o *outcome) add(c deliveryCounts, failed []string) {
	o.counts.add(c)
	o.failed = append(o.failed, failed...)
}

// dispatch hands ev to every recipient of r: local mailboxes at once, peers
// with one request each carrying all their recipients, external gateways one
// request per recipient, all in parallel within the forward deadline. When
// this node's mailboxes have no room for the event (--max-mailbox-bytes) it
// refuses it with errMailboxBudget before handing it to anyone.
func (g *Gateway) dispatch(ctx context.Context, r route, ev wire.Event, body json.RawMessage, hops int) (outcome, error) {
	var out outcome
	tp := wire.TraceparentFrom(ctx)
	if tp == "" {
		tp = wire.NewTraceparent()
	}
	if len(r.local) > 0 {
		shared := ws.NewTracedEvent(ev.EventID, ev.SessionID, tp, body, g.now()).WithSender(ev.SenderID)
		if r.freshID {
			shared.WithFreshID()
		}
		if !g.hub.Reserve(shared) {
			return outcome{}, errMailboxBudget
		}
		var moved []string
		out.counts, moved = g.deliverLocal(r.local, shared)
		// The mailboxes that took the event hold it now.
		g.hub.Release(shared)
		for _, id := range moved { // moved to another node between lookup and delivery
			if node, _ := g.homeElsewhere(ctx, id); node != "" && hops < MaxHops {
				if r.peers == nil {
					r.peers = map[string][]string{}
				}
				r.peers[node] = append(r.peers[node], id)
			} else {
				out.failed = append(out.failed, id) // reported as failed: the sender retries
			}
		}
		g.metrics.DeliveredLocal.Add(float64(out.counts.Live + out.counts.Queued))
	}
	if len(r.peers) > 0 || len(r.external) > 0 {
		remote := g.dispatchRemote(ctx, r, ev, body, tp, hops)
		out.add(remote.counts, remote.failed)
	}
	return out, nil
}

// deliverLocal appends the shared event to the mailboxes of the local
// recipients and says which of them have moved away meanwhile.
func (g *Gateway) deliverLocal(local []*ws.Participant, shared *ws.Event) (c deliveryCounts, moved []string) {
	for _, p := range local {
		switch g.hub.Deliver(p, shared) {
		case ws.Live:
			c.Live++
		case ws.Queued:
			c.Queued++
		case ws.Duplicate:
			c.Duplicates++
		case ws.Gone:
			moved = append(moved, p.ID())
		}
	}
	return c, moved
}

// dispatchRemote forwards ev to r's peers and external gateways in
// parallel, within the forward deadline.
func (g *Gateway) dispatchRemote(ctx context.Context, r route, ev wire.Event, body json.RawMessage, tp string, hops int) outcome {
	var (
		mu  sync.Mutex
		out outcome
		wg  sync.WaitGroup
	)
	record := func(c deliveryCounts, failed []string, delivered prometheus.Counter, n int) {
		mu.Lock()
		out.add(c, failed)
		mu.Unlock()
		delivered.Add(float64(n))
	}
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout)
	defer cancel()
	ctx = wire.WithTraceparent(ctx, wire.ChildTraceparent(tp)) // the hop's span
	for node, ids := range r.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, failed := g.forwardToPeer(ctx, node, ids, ev, body, hops+1)
			record(c, failed, g.metrics.DeliveredPeer, c.Live+c.Queued)
		}()
	}
	for _, e := range r.external {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, failed := g.forwardToGateway(ctx, e, ev, body)
			record(c, failed, g.metrics.DeliveredExternal, c.Live)
		}()
	}
	wg.Wait()
	return out
}

// PeerDelivery is the body of a delivery between Switchyard nodes.
type PeerDelivery struct {
	RecipientIDs []string        `json:"recipient_ids"`
	SessionID    string          `json:"session_id,omitempty"`
	Event        json.RawMessage `json:"event"`
}

// forwardToPeer posts one delivery carrying all of ids to node. It returns
// how the recipients got the event and which could not be reached.
func (g *Gateway) forwardToPeer(ctx context.Context, node string, ids []string, ev wire.Event, body json.RawMessage, hops int) (deliveryCounts, []string) {
	ans, err := g.peers.Deliver(ctx, node, PeerDelivery{RecipientIDs: ids, SessionID: ev.SessionID, Event: body}, hops)
	switch {
	case errors.Is(err, ErrNotMember):
		g.log.Warn("no URL for a peer in the directory", "peer", node)
		return deliveryCounts{}, ids
	case err != nil:
		g.log.Warn("a peer could not be reached", append(wire.TraceAttrs(ctx, wire.TraceparentFrom(ctx)), "peer", node, "recipients", len(ids), "err", err)...)
		return deliveryCounts{}, ids
	case ans.Status == http.StatusOK:
		return ans.Result.deliveryCounts, ans.Result.Failed
	case ans.Status == http.StatusNotFound:
		return deliveryCounts{}, nil // the directory was stale: nobody there any more
	default:
		g.log.Warn("a peer refused a delivery", append(wire.TraceAttrs(ctx, wire.TraceparentFrom(ctx)), "peer", node, "status", ans.Status, "answer", wire.Truncate(ans.Refusal))...)
		return deliveryCounts{}, ids
	}
}

// externalDelivery is a delivery to a gateway outside the cluster, shaped
// exactly as the API reference shapes it.
type externalDelivery struct {
	RecipientID         string          `json:"recipient_id"`
	SessionID           string          `json:"session_id,omitempty"`
	RecipientGatewayURL string          `json:"recipient_gateway_url"`
	Event               json.RawMessage `json:"event"`
}

// forwardToGateway posts one delivery for external participant e to its
// gateway, and feeds the outcome to the circuit breaker (see
// externals.delivered).
func (g *Gateway) forwardToGateway(ctx context.Context, e membership.Entry, ev wire.Event, body json.RawMessage) (deliveryCounts, []string) {
	if !g.gatewayAllowed(e.GatewayURL) { // the allow-list may have shrunk since it was registered
		g.recordExternalDelivery(e, false)
		return deliveryCounts{}, []string{e.Participant}
	}
	req, _ := json.Marshal(externalDelivery{RecipientID: e.Participant, SessionID: ev.SessionID,
		RecipientGatewayURL: e.GatewayURL, Event: body})
	status, err := g.gateways.Deliver(ctx, e.GatewayURL, req)
	switch {
	case err != nil:
		g.log.Warn("an external gateway could not be reached", append(wire.TraceAttrs(ctx, wire.TraceparentFrom(ctx)), "participant", e.Participant, "err", err)...)
		if !errors.Is(ctx.Err(), context.Canceled) { // the submitter gave up: no fault of the gateway
			g.recordExternalDelivery(e, false)
		}
		return deliveryCounts{}, []string{e.Participant}
	case status == http.StatusOK:
		g.recordExternalDelivery(e, true)
		return deliveryCounts{Live: 1}, nil // handed over: what it does next is its gateway's business
	case status == http.StatusNotFound:
		return deliveryCounts{}, nil
	default:
		g.log.Warn("an external gateway refused a delivery", append(wire.TraceAttrs(ctx, wire.TraceparentFrom(ctx)), "participant", e.Participant, "status", status)...)
		g.recordExternalDelivery(e, false)
		return deliveryCounts{}, []string{e.Participant}
	}
}

// gatewayAllowed reports whether url may be followed: it starts with an
// --allow-gateway prefix, or is a cluster member's own URL.
func (g *Gateway) gatewayAllowed(raw string) bool {
	for _, prefix := range g.allowGateways {
		if urlUnder(raw, prefix) {
			return true
		}
	}
	for _, m := range g.cluster.Members() {
		if m.URL != "" && strings.TrimSuffix(raw, "/") == strings.TrimSuffix(m.URL, "/") {
			return true
		}
	}
	return false
}

// urlUnder reports whether raw is under prefix: the same scheme and host
// (port included) exactly, and a path that continues prefix's path at a
// segment boundary. A plain string prefix would let
// "https://gw.example.com.evil.net" pass for "https://gw.example.com".
//
// Paths are compared decoded (u.Path: "%6F" is "o", "%2F" is "/"), and a
// URL with a dot segment ("." or "..", encoded or not) or a backslash in
// its path is never under any prefix: a server resolving
// "/hooks/../admin" would receive the external key outside "/hooks".
func urlUnder(raw, prefix string) bool {
	u, err1 := url.Parse(raw)
	p, err2 := url.Parse(prefix)
	if err1 != nil || err2 != nil || u.User != nil || wire.DotSegments(u.Path) {
		return false
	}
	if !strings.EqualFold(u.Scheme, p.Scheme) || !strings.EqualFold(u.Host, p.Host) {
		return false
	}
	base := strings.TrimSuffix(p.Path, "/")
	return u.Path == base || strings.HasPrefix(u.Path, base+"/") || base == ""
}

// AddParticipant adds participant id to session where it lives: on this
// node when it is homed here or nowhere yet (it is then created offline
// here), otherwise on the peers that host it.
func (g *Gateway) AddParticipant(ctx context.Context, id, typ, session string, hops int) error {
	// Owners that did not answer leave what the others found: a PUT goes
	// on with that, as an attach does, rather than fail while an owner is
	// slow or its death not yet noticed.
	homes, _ := g.homesElsewhere(ctx, id)
	if g.hub.Lookup(id) != nil || len(homes) == 0 || hops >= MaxHops {
		if err := g.Join(id, typ, session); err != nil {
			return err
		}
		g.cluster.Sync(ctx) // answered once the session's owners have it
		return nil
	}
	return g.forwardMembership(ctx, http.MethodPut, homes, id, session, hops)
}

// RemoveParticipant takes participant id out of session here, on the peers
// that host it, and from this node's external participants.
func (g *Gateway) RemoveParticipant(ctx context.Context, id, session string, hops int) error {
	removed := g.externals.remove(id, session)
	if g.hub.Lookup(id) != nil {
		if err := g.Leave(id, session); err == nil {
			removed = true
		}
	}
	homes, err := g.homesElsewhere(ctx, id)
	if err != nil {
		return err
	}
	if len(homes) > 0 && hops < MaxHops {
		if err := g.forwardMembership(ctx, http.MethodDelete, homes, id, session, hops); err == nil {
			removed = true
		} else if wire.AsError(err).Status != http.StatusNotFound {
			return err
		}
	}
	if !removed {
		return wire.NewError(http.StatusNotFound, "participant_not_found", "", "the participant is not in that session")
	}
	return nil
}

// homesElsewhere lists the peers hosting participant id, and
// ErrDirectory with what was found when the lookup could not be answered
// whole.
func (g *Gateway) homesElsewhere(ctx context.Context, id string) ([]string, error) {
	entries, err := g.cluster.Participant(ctx, id)
	var nodes []string
	for _, e := range entries {
		if e.GatewayURL == "" && e.Node != g.self {
			nodes = append(nodes, e.Node)
		}
	}
	if err != nil {
		return nodes, ErrDirectory(id)
	}
	return nodes, nil
}

// ErrDirectory answers a request whose directory lookup no owner
// answered as the path of an unreachable peer does (502
// recipients_unreachable): the recipients may exist, this node cannot
// tell where, and the client retries.
func ErrDirectory(recipient string) *wire.Error {
	e := &wire.Error{Status: http.StatusBadGateway, Code: "recipients_unreachable",
		Detail: "the nodes that keep the directory's records for this could not be reached"}
	if recipient != "" {
		e.Failed = []string{recipient}
	}
	return e
}

// forwardMembership repeats a PUT or DELETE of a session participant on the
// nodes that host it; it succeeds when one of them does.
func (g *Gateway) forwardMembership(ctx context.Context, method string, nodes []string, id, session string, hops int) error {
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout)
	defer cancel()
	var last error = ErrNoRecipient
	for _, node := range nodes {
		ans, err := g.peers.Membership(ctx, node, method, id, session, hops+1)
		switch {
		case errors.Is(err, ErrNotMember):
		case err != nil:
			last = &wire.Error{Status: http.StatusBadGateway, Code: "recipients_unreachable", Failed: []string{id},
				Detail: "the participant's node could not be reached"}
		case ans.Status == http.StatusOK:
			return nil
		case ans.Err != nil:
			last = ans.Err
		}
	}
	return last
}
