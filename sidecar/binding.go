package sidecar

// What the bindings do around the core: decoding and authorising a
// submitted event (REST and the WebSocket submit frame), and answering
// client frames (wsBackend implements ws.Backend). The core is gateway.go.

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// submitJSON decodes, validates, authorises and submits one event body.
// who, when set, supplies sender_id and sender_type that the body leaves
// out.
func submitJSON(ctx context.Context, g *routing.Gateway, raw []byte, cred Credential, who *ws.Identity) (routing.SubmitResult, error) {
	var w wire.DecodedEvent
	if err := wire.DecodeEvent(raw, &w); err != nil {
		return routing.SubmitResult{}, err
	}
	if who != nil {
		if w.SenderID == nil {
			w.SenderID = &who.ParticipantID
		}
		if w.SenderType == nil {
			w.SenderType = &who.ParticipantType
		}
	}
	ev, verr := w.Validate("", g.Limits())
	if verr != nil {
		return routing.SubmitResult{}, verr
	}
	if err := authorizeSubmit(cred, ev); err != nil {
		return routing.SubmitResult{}, err
	}
	return g.SubmitAs(ctx, ev, cred.externalOwner())
}

// authorizeSubmit checks that a participant token submits only as its own
// participant, to its sessions, and registers no external gateway (that
// takes an API key, as on the PUT endpoint); a direct message without a
// session needs a token without a sessions claim.
func authorizeSubmit(cred Credential, ev wire.Event) *wire.Error {
	if err := cred.actAs(ev.SenderID, "sender_id"); err != nil {
		return err
	}
	if ev.SenderGatewayURL != "" && cred.Kind == credToken {
		return errForbidden("sender_gateway_url", "a participant token may not register an external gateway: "+
			"leave sender_gateway_url out, or submit with an API key")
	}
	if ev.SessionID != "" {
		return cred.useSession(ev.SessionID)
	}
	if cred.Kind == credToken && cred.Sessions != nil {
		return errForbidden("session_id", "this participant token allows only its sessions: give a session_id")
	}
	return nil
}

// The ws.Backend side: client frames answered as their REST twins.

// Submit handles a submit frame; sender_id and sender_type default to the
// connection's participant.
func (b *wsBackend) wsSubmit(ctx context.Context, who ws.Identity, raw json.RawMessage) ws.Reply {
	res, err := submitJSON(ctx, b.g, raw, credOf(who), &who)
	b.metrics.recordSubmit(err)
	if err != nil {
		return b.replyError(ctx, who, "submit", err)
	}
	return ws.Reply{Status: http.StatusOK, Body: res.AppendJSON(make([]byte, 0, 160))}
}

// wsBackend answers client frames (it is the hub's ws.Backend). Submit, join and leave frames draw from
// the rate limit (limit, nil: none) like their REST twins.
type wsBackend struct {
	g       *routing.Gateway // set once the gateway is made: the hub it needs is made with this backend
	cluster membership.Cluster
	limit   *rateLimiter
	metrics *Metrics
	log     *slog.Logger
}

// allowFrame takes a token for one client frame from the bucket of the
// connection's credential: the one its attach and the credential's REST
// requests draw from. Past the limit it answers 429 rate_limited, with the
// wait in retry_after, and the frame is not executed.
func (b *wsBackend) allowFrame(who ws.Identity) *wire.Error {
	if b.limit == nil {
		return nil
	}
	if wait, ok := b.limit.allow(who.RateKey); !ok {
		return errRateLimited(wait, "too many requests for this credential (REST requests and WebSocket frames together); retry in "+
			retryAfter(wait)+" s (retry_after)")
	}
	return nil
}

func (b *wsBackend) Submit(ctx context.Context, who ws.Identity, raw json.RawMessage) ws.Reply {
	if err := b.allowFrame(who); err != nil {
		return b.replyError(ctx, who, "submit", err)
	}
	return b.wsSubmit(ctx, who, raw)
}

func (b *wsBackend) Join(ctx context.Context, who ws.Identity, session string) ws.Reply {
	if err := b.allowFrame(who); err != nil {
		return b.replyError(ctx, who, "join", err)
	}
	if err := credOf(who).useSession(session); err != nil {
		return b.replyError(ctx, who, "join", err)
	}
	if err := b.g.Join(who.ParticipantID, who.ParticipantType, session); err != nil {
		return b.replyError(ctx, who, "join", err)
	}
	b.cluster.Sync(ctx) // answered once the session's owners have it: a submit anywhere then finds it
	return replyOK(sessionChange{Status: "ok", SessionID: session})
}

func (b *wsBackend) Leave(ctx context.Context, who ws.Identity, session string) ws.Reply {
	if err := b.allowFrame(who); err != nil {
		return b.replyError(ctx, who, "leave", err)
	}
	if err := b.g.Leave(who.ParticipantID, session); err != nil {
		return b.replyError(ctx, who, "leave", err)
	}
	b.cluster.Sync(ctx)
	return replyOK(sessionChange{Status: "ok", SessionID: session})
}

// credOf is the credential a connection attached with.
func credOf(who ws.Identity) Credential {
	if c, ok := who.Credential.(Credential); ok {
		return c
	}
	return Credential{Kind: credNone}
}

type sessionChange struct {
	Status    string `json:"status"`
	SessionID string `json:"session_id"`
}

func replyOK(v any) ws.Reply {
	b, _ := json.Marshal(v)
	return ws.Reply{Status: http.StatusOK, Body: b}
}

// replyError answers a client frame's failure as its REST twin would
// (Node.serve): an error that is not an *Error is a defect, answered as a
// 500 that says it has been logged, and logged here with its cause.
func (b *wsBackend) replyError(ctx context.Context, who ws.Identity, frame string, err error) ws.Reply {
	logIfUnexpected(ctx, b.log, err, "frame", frame, "participant", who.ParticipantID)
	e := wire.AsError(err)
	return ws.Reply{Status: e.Status, Body: wire.ErrorBody(e), Code: e.Code, Detail: e.Detail}
}
