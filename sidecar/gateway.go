package sidecar

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// Gateway is the core of a node, callable without HTTP: it validates events,
// resolves their recipients and hands them to mailboxes. The REST handlers
// and the WebSocket submit frame both call it.
type Gateway struct {
	limits  Limits
	hub     *ws.Hub
	cluster membership.Cluster
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
}

var _ ws.Backend = wsBackend{}

// SubmitResult is the answer to an accepted submit.
type SubmitResult struct {
	Status     string `json:"status"`
	EventID    string `json:"event_id"`
	Recipients int    `json:"recipients"`
}

// Submit routes ev to its recipients: every participant of its session but
// the sender, or its recipient_id alone.
func (g *Gateway) Submit(ctx context.Context, ev Event) (SubmitResult, error) {
	if ev.SessionID == "" && ev.RecipientID == "" {
		return SubmitResult{}, fieldError(codeMissingField, "session_id", "session_id or recipient_id is required")
	}
	if ev.SenderGatewayURL != "" {
		return SubmitResult{}, errGatewayNotAllowed("sender_gateway_url")
	}
	if ev.EventID == "" {
		ev.EventID = newEventID()
	}
	targets := g.localTargets(ev)
	if len(targets) == 0 {
		return SubmitResult{}, errNoRecipient
	}
	shared, err := g.encode(ev, ev.SessionID)
	if err != nil {
		return SubmitResult{}, err
	}
	delivered := 0
	for _, p := range targets {
		if g.hub.Deliver(p, shared) {
			delivered++
		}
	}
	if delivered == 0 { // every target went away between lookup and delivery
		return SubmitResult{}, errNoRecipient
	}
	g.metrics.Deliveries.WithLabelValues("local").Add(float64(delivered))
	return SubmitResult{Status: "ok", EventID: ev.EventID, Recipients: delivered}, nil
}

// localTargets resolves the recipients of ev homed on this node.
func (g *Gateway) localTargets(ev Event) []*ws.Participant {
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

// encode makes the one shared encoding of ev for this node's mailboxes.
func (g *Gateway) encode(ev Event, sessionID string) (*ws.Event, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err // metadata values were checked as JSON: cannot happen
	}
	return ws.NewEvent(ev.EventID, sessionID, body, g.now()), nil
}

// DeliveryRequest is the body of POST /v1/gateway/deliveries.
type DeliveryRequest struct {
	RecipientIDs        []string
	SessionID           string
	RecipientGatewayURL string
	Event               Event
}

// DeliveryResult is the answer to a delivery: ok, with the recipients that
// are not here when a batch named several and only some were found.
type DeliveryResult struct {
	Status     string   `json:"status"`
	Recipients int      `json:"recipients"`
	NotFound   []string `json:"not_found,omitempty"`
}

// Deliver puts an event into the mailboxes of the named local participants.
func (g *Gateway) Deliver(ctx context.Context, req DeliveryRequest) (DeliveryResult, error) {
	ev := req.Event
	if ev.SenderGatewayURL != "" {
		return DeliveryResult{}, errGatewayNotAllowed("event.sender_gateway_url")
	}
	if ev.EventID == "" {
		ev.EventID = newEventID()
	}
	sessionID := req.SessionID
	if sessionID == "" {
		sessionID = ev.SessionID
	}
	var shared *ws.Event
	res := DeliveryResult{Status: "ok"}
	for _, id := range req.RecipientIDs {
		p := g.hub.Lookup(id)
		if p == nil {
			res.NotFound = append(res.NotFound, id)
			continue
		}
		if shared == nil {
			var err error
			if shared, err = g.encode(ev, sessionID); err != nil {
				return DeliveryResult{}, err
			}
		}
		if g.hub.Deliver(p, shared) {
			res.Recipients++
		} else {
			res.NotFound = append(res.NotFound, id)
		}
	}
	if res.Recipients == 0 {
		return DeliveryResult{}, errNoRecipient
	}
	g.metrics.Deliveries.WithLabelValues("local").Add(float64(res.Recipients))
	return res, nil
}

// Join adds a participant of this node to a session.
func (g *Gateway) join(participantID, participantType, sessionID string) error {
	if err := checkID(sessionID, "session_id", ident.MaxSessionID); err != nil {
		return err
	}
	if err := g.hub.Join(participantID, participantType, sessionID); err != nil {
		return fieldError("too_many_sessions", "session_id", "the participant is already in the maximum number of sessions")
	}
	return nil
}

func (g *Gateway) leave(participantID, sessionID string) error {
	if err := checkID(sessionID, "session_id", ident.MaxSessionID); err != nil {
		return err
	}
	if !g.hub.Leave(participantID, sessionID) {
		return newError(http.StatusNotFound, "participant_not_found", "", "the participant is not in that session on this node")
	}
	return nil
}

// submitJSON decodes, validates and submits one event body. who, when set,
// supplies sender_id and sender_type that the body leaves out.
func (g *Gateway) submitJSON(ctx context.Context, raw []byte, who *ws.Identity) (SubmitResult, error) {
	var w wireEvent
	if err := decodeJSON(raw, &w); err != nil {
		return SubmitResult{}, err
	}
	if who != nil {
		if w.SenderID == nil {
			w.SenderID = &who.ParticipantID
		}
		if w.SenderType == nil {
			w.SenderType = &who.ParticipantType
		}
	}
	ev, verr := w.validate("", g.limits)
	if verr != nil {
		return SubmitResult{}, verr
	}
	return g.Submit(ctx, ev)
}

// The ws.Backend side: client frames answered as their REST twins.

// Submit handles a submit frame; sender_id and sender_type default to the
// connection's participant.
func (g *Gateway) wsSubmit(ctx context.Context, who ws.Identity, raw json.RawMessage) ws.Reply {
	res, err := g.submitJSON(ctx, raw, &who)
	g.metrics.recordSubmit(err)
	if err != nil {
		return replyError(err)
	}
	return replyOK(res)
}

type wsBackend struct{ g *Gateway }

func (b wsBackend) Submit(ctx context.Context, who ws.Identity, raw json.RawMessage) ws.Reply {
	return b.g.wsSubmit(ctx, who, raw)
}

func (b wsBackend) Join(ctx context.Context, who ws.Identity, session string) ws.Reply {
	if err := b.g.join(who.ParticipantID, who.ParticipantType, session); err != nil {
		return replyError(err)
	}
	return replyOK(sessionChange{Status: "ok", SessionID: session})
}

func (b wsBackend) Leave(ctx context.Context, who ws.Identity, session string) ws.Reply {
	if err := b.g.leave(who.ParticipantID, session); err != nil {
		return replyError(err)
	}
	return replyOK(sessionChange{Status: "ok", SessionID: session})
}

type sessionChange struct {
	Status    string `json:"status"`
	SessionID string `json:"session_id"`
}

func replyOK(v any) ws.Reply {
	b, _ := json.Marshal(v)
	return ws.Reply{Status: http.StatusOK, Body: b}
}

func replyError(err error) ws.Reply {
	e := asError(err)
	return ws.Reply{Status: e.Status, Body: errorBody(e), Code: e.Code, Detail: e.Detail}
}
