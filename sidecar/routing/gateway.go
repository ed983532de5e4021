package routing

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/jsonw"
	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// Gateway is the core of a node, callable without HTTP: it validates events,
// resolves their recipients across the cluster and hands them over: to local
// mailboxes, to peers, to external gateways. The bindings (package
// sidecar: the REST handlers and the WebSocket submit frame) call it.
type Gateway struct {
	self           string
	limits         wire.Limits
	hub            *ws.Hub
	cluster        membership.Cluster
	peers          Peers            // the other nodes of the cluster
	gateways       ExternalGateways // gateways outside the cluster
	allowGateways  []string         // URL prefixes external gateways must match
	forwardTimeout time.Duration
	externals      *externals
	moved          movedTo
	held           heldStates    // states released to a peer, until it confirms
	holdFor        time.Duration // how long a released state is held: the offline TTL
	stateLimit     int64         // the largest participant state a hand-off carries
	// closed is set when the node starts draining: it takes no more
	// submits (its directory stops being kept up to date once it leaves).
	closed atomic.Bool
	// published, when set, is told of every event someone got, with its
	// JSON (the node's read-only watchers of sessions, observe=1).
	published func(session, eventID string, eventJSON []byte)
	metrics   Metrics
	log       *slog.Logger
	now       func() time.Time
}

// Config is what the core needs, given explicitly: the node's name
// and limits, its hub of local participants, the cluster view, the ways to
// other nodes and to external gateways, and the node's task group,
// metrics and log.
type Config struct {
	Self           string // this node's name in the cluster
	Limits         wire.Limits
	Hub            *ws.Hub
	Cluster        membership.Cluster
	Peers          Peers
	Gateways       ExternalGateways
	AllowGateways  []string      // URL prefixes external gateways must match (--allow-gateway)
	ForwardTimeout time.Duration // the deadline of a delivery to peers and gateways
	Externals      ExternalLimits
	StateLimit     int64        // the largest participant state a hand-off carries (--max-handoff-bytes)
	Tasks          *tasks.Group // owns the expiry timers of released states
	// Published, when set, is told of every event someone got, with its
	// JSON.
	Published func(session, eventID string, eventJSON []byte)
	Metrics   Metrics
	Logger    *slog.Logger
}

// NewGateway makes the core of a node. A released state is held as long as
// the hub keeps an offline participant (its OfflineTTL).
func NewGateway(c Config) *Gateway {
	return &Gateway{
		self:           c.Self,
		limits:         c.Limits,
		hub:            c.Hub,
		cluster:        c.Cluster,
		peers:          c.Peers,
		gateways:       c.Gateways,
		allowGateways:  c.AllowGateways,
		forwardTimeout: c.ForwardTimeout,
		externals:      newExternals(c.Externals, c.Cluster),
		held:           heldStates{timers: c.Tasks},
		holdFor:        c.Hub.Settings().OfflineTTL,
		stateLimit:     c.StateLimit,
		published:      c.Published,
		metrics:        c.Metrics,
		log:            c.Logger,
		now:            time.Now,
	}
}

// Members lists the cluster as this node sees it.
func (g *Gateway) Members() []membership.Member { return g.cluster.Members() }

// SubmitResult is the answer to an accepted submit: how many recipients
// have the event, and how: live (attached), queued (offline, within their
// window), or duplicates (a retry they already had).
type SubmitResult struct {
	Status     string `json:"status"`
	EventID    string `json:"event_id"`
	Recipients int    `json:"recipients"`
	deliveryCounts
}

// AppendJSON appends r's JSON form, what json.Marshal(r) gives
// (TestSubmitResultAppendJSON compares them), for the answer of every submit.
func (r *SubmitResult) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"status":`...)
	dst = jsonw.AppendString(dst, r.Status)
	dst = append(dst, `,"event_id":`...)
	dst = jsonw.AppendString(dst, r.EventID)
	for _, f := range [...]struct {
		name string
		v    int
	}{{"recipients", r.Recipients}, {"live", r.Live}, {"queued", r.Queued}, {"duplicates", r.Duplicates}} {
		dst = append(dst, ',', '"')
		dst = append(dst, f.name...)
		dst = append(dst, '"', ':')
		dst = strconv.AppendInt(dst, int64(f.v), 10)
	}
	return append(dst, '}')
}

// Submit routes ev to its recipients: every participant of its session but
// the sender, or its recipient_id alone, wherever in the cluster they live.
// When some recipient's node or gateway cannot be reached it answers 502
// naming them; the others did get the event.
func (g *Gateway) Submit(ctx context.Context, ev wire.Event) (SubmitResult, error) {
	return g.SubmitAs(ctx, ev, "")
}

// SubmitAs is Submit on behalf of owner, the credential an external sender
// registered by ev counts against ("": none).
func (g *Gateway) SubmitAs(ctx context.Context, ev wire.Event, owner string) (SubmitResult, error) {
	if g.closed.Load() {
		return SubmitResult{}, wire.NewError(http.StatusServiceUnavailable, "draining", "",
			"this node is shutting down; submit to another node (with the same event_id)")
	}
	if !g.cluster.Settled() {
		return SubmitResult{}, wire.NewError(http.StatusServiceUnavailable, "not_ready", "",
			"this node is still learning the cluster; submit to another node or retry in a moment")
	}
	if ev.SessionID == "" && ev.RecipientID == "" {
		return SubmitResult{}, wire.FieldError(wire.CodeMissingField, "session_id", "session_id or recipient_id is required")
	}
	var sender *externalRequest // registered once the submit is accepted
	if ev.SenderGatewayURL != "" {
		var err *wire.Error
		if sender, err = g.admitSender(ev, owner); err != nil {
			return SubmitResult{}, err
		}
	}
	freshID := ev.EventID == ""
	if freshID {
		ev.EventID = wire.NewEventID()
	}
	r, err := g.resolve(ctx, ev)
	if err != nil {
		return SubmitResult{}, err
	}
	if r.empty() {
		g.log.Debug("a submit found no recipient", "session", ev.SessionID, "recipient", ev.RecipientID, "event_id", ev.EventID)
		return SubmitResult{}, ErrNoRecipient
	}
	// Only a submit that stays on this node can skip the lookup: one that
	// also goes to a peer may come back here through it (a participant
	// being handed over to this node is in both places for a moment).
	r.freshID = freshID && len(r.peers) == 0 && len(r.external) == 0
	// The one encoding, shared by every recipient and peer.
	body, err := ev.AppendJSON(make([]byte, 0, len(ev.Message)+len(ev.SenderID)+len(ev.SessionID)+len(ev.EventID)+128))
	if err != nil {
		return SubmitResult{}, err
	}
	out, err := g.dispatch(ctx, r, ev, body, 0)
	if err != nil {
		return SubmitResult{}, err
	}
	if out.counts.total() > 0 {
		if sender != nil { // someone got it and may answer
			g.registerSender(*sender)
		}
		g.publish(ev.SessionID, ev.EventID, body)
	}
	if len(out.failed) > 0 {
		slices.Sort(out.failed)
		return SubmitResult{}, &wire.Error{Status: http.StatusBadGateway, Code: "recipients_unreachable", EventID: ev.EventID,
			Failed: out.failed, Detail: "some recipients' nodes or gateways could not be reached; the others got the event. " +
				"Retry with the same event_id to reach those that missed it"}
	}
	if out.counts.total() == 0 { // every target went away between lookup and delivery
		return SubmitResult{}, ErrNoRecipient
	}
	return SubmitResult{Status: "ok", EventID: ev.EventID, Recipients: out.counts.total(), deliveryCounts: out.counts}, nil
}

// admitSender checks ev's sender_gateway_url before anything is delivered
// and returns the registration to make once the submit is accepted (nil:
// none, as the event has no session or its sender is attached here, where
// local wins).
func (g *Gateway) admitSender(ev wire.Event, owner string) (*externalRequest, *wire.Error) {
	req := externalRequest{id: ev.SenderID, typ: ev.SenderType, url: ev.SenderGatewayURL,
		session: ev.SessionID, owner: owner, field: "sender_gateway_url"}
	if err := g.checkGatewayTarget(req.url, req.field); err != nil {
		return nil, err
	}
	if ev.SessionID == "" || g.hub.Lookup(ev.SenderID) != nil {
		return nil, nil
	}
	if err := g.externals.admit(req); err != nil {
		return nil, err
	}
	return &req, nil
}

// registerSender makes the sender of an accepted submit an external
// participant of its session at its sender_gateway_url, known cluster-wide,
// so replies reach it. The event is delivered by now: a registration that
// lost a race for the last free place is logged, not answered.
func (g *Gateway) registerSender(req externalRequest) {
	if err := g.registerExternal(req); err != nil {
		g.log.Warn("an external sender could not be registered after its submit was accepted",
			"participant", req.id, "err", err)
	}
}

// localTargets resolves the recipients of ev homed on this node.
func (g *Gateway) localTargets(ev wire.Event) []*ws.Participant {
	if ev.RecipientID != "" {
		p := g.hub.Lookup(ev.RecipientID)
		if p == nil || (ev.SessionID != "" && !p.InSession(ev.SessionID)) {
			return nil
		}
		return []*ws.Participant{p}
	}
	members := g.hub.SessionMembers(ev.SessionID)
	for i, p := range members {
		if p.ID() == ev.SenderID { // rare: copy once, without the sender
			out := make([]*ws.Participant, 0, len(members)-1)
			out = append(out, members[:i]...)
			return append(out, members[i+1:]...)
		}
	}
	return members
}

// DeliveryResult is the answer to a delivery: ok, with the recipients that
// are not here when a batch named several and only some were found.
type DeliveryResult struct {
	Status     string `json:"status"`
	Recipients int    `json:"recipients"`
	deliveryCounts
	NotFound []string `json:"not_found,omitempty"`
	Failed   []string `json:"failed,omitempty"`
}

// Deliver puts an event into the mailboxes of the named participants homed
// here. A recipient homed on a peer (the sender's view was stale) is
// forwarded there, while hops (forwards so far) is below MaxHops; past
// that, or when the directory cannot say where it went, it is reported
// failed (the sender retries), and not found only when no node has it.
func (g *Gateway) Deliver(ctx context.Context, req wire.DeliveryRequest, hops int) (DeliveryResult, error) {
	ev := req.Event
	if ev.SenderGatewayURL != "" && !g.gatewayAllowed(ev.SenderGatewayURL) {
		return DeliveryResult{}, ErrGatewayNotAllowed("event.sender_gateway_url")
	}
	if ev.EventID == "" {
		ev.EventID = wire.NewEventID()
	}
	if req.SessionID != "" {
		ev.SessionID = req.SessionID
	}
	var (
		r route
		// unplaced are recipients that are not here and may live on:
		// reported failed, so that the sender retries them (with the same
		// event_id) and resolves them afresh. Reported not found, the
		// event would be answered 200 without reaching them.
		unplaced []string
	)
	res := DeliveryResult{Status: "ok"}
	for _, id := range req.RecipientIDs {
		if p := g.hub.Lookup(id); p != nil {
			r.local = append(r.local, p)
			continue
		}
		node, err := g.homeElsewhere(ctx, id)
		switch {
		case err != nil: // the directory cannot say where it is
			unplaced = append(unplaced, id)
			continue
		case node == "":
			res.NotFound = append(res.NotFound, id)
			continue
		case hops >= MaxHops: // it moved on again since the sender looked
			unplaced = append(unplaced, id)
			continue
		}
		if r.peers == nil {
			r.peers = map[string][]string{}
		}
		r.peers[node] = append(r.peers[node], id)
	}
	if r.empty() && len(unplaced) == 0 {
		return DeliveryResult{}, ErrNoRecipient
	}
	if r.empty() {
		return DeliveryResult{}, &wire.Error{Status: http.StatusBadGateway, Code: "recipients_unreachable", EventID: ev.EventID,
			Failed: unplaced, Detail: "the recipients are not on this node, and where they went could not be followed"}
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return DeliveryResult{}, err
	}
	out, err := g.dispatch(ctx, r, ev, body, hops)
	if err != nil {
		return DeliveryResult{}, err
	}
	out.failed = append(out.failed, unplaced...)
	res.Recipients, res.deliveryCounts, res.Failed = out.counts.total(), out.counts, out.failed
	if len(r.local) > 0 && res.Recipients > 0 {
		g.publish(ev.SessionID, ev.EventID, body)
	}
	if res.Recipients == 0 && len(out.failed) == 0 {
		return DeliveryResult{}, ErrNoRecipient
	}
	if res.Recipients == 0 {
		return DeliveryResult{}, &wire.Error{Status: http.StatusBadGateway, Code: "recipients_unreachable", EventID: ev.EventID,
			Failed: out.failed, Detail: "the recipients' node could not be reached"}
	}
	return res, nil
}

// homeElsewhere is a peer that hosts participant id, or "": where this
// node released it to lately, else what the directory says. The error
// says the directory's owners could not be reached and nothing was found:
// the participant may live somewhere all the same.
func (g *Gateway) homeElsewhere(ctx context.Context, id string) (string, error) {
	if node := g.moved.lookup(id, g.now()); node != "" {
		return node, nil
	}
	entries, err := g.cluster.Participant(ctx, id)
	for _, e := range entries {
		if e.GatewayURL == "" && e.Node != g.self {
			return e.Node, nil
		}
	}
	return "", err
}

// Join adds a participant of this node to a session.
func (g *Gateway) Join(participantID, participantType, sessionID string) error {
	if err := wire.CheckID(sessionID, "session_id", ident.MaxSessionID); err != nil {
		return err
	}
	if err := g.hub.Join(participantID, participantType, sessionID); err != nil {
		return wire.FieldError("too_many_sessions", "session_id", "the participant is already in the maximum number of sessions")
	}
	return nil
}

func (g *Gateway) Leave(participantID, sessionID string) error {
	if err := wire.CheckID(sessionID, "session_id", ident.MaxSessionID); err != nil {
		return err
	}
	if !g.hub.Leave(participantID, sessionID) {
		return wire.NewError(http.StatusNotFound, "participant_not_found", "", "the participant is not in that session on this node")
	}
	return nil
}

// publish tells published, when set, of an event someone got.
func (g *Gateway) publish(session, eventID string, eventJSON []byte) {
	if g.published != nil {
		g.published(session, eventID, eventJSON)
	}
}
