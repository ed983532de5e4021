package ws

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/coder/websocket"
)

// Backend answers the client frames that need the gateway core. Each method
// returns what the matching REST call would answer.
type Backend interface {
	Submit(ctx context.Context, who Identity, event json.RawMessage) Reply
	Join(ctx context.Context, who Identity, session string) Reply
	Leave(ctx context.Context, who Identity, session string) Reply
}

// Reply is a REST-shaped answer: the status and the JSON body. For an error,
// Code and Detail repeat the body's fields for the error frame.
type Reply struct {
	Status int
	Body   json.RawMessage
	Code   string
	Detail string
}

// readLoop reads client frames until the connection fails or closes. It is
// the connection's one reader for its whole life: coder/websocket answers
// pings and close frames only while a read is in progress.
func (c *conn) readLoop() {
	ctx := context.Background()
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			if s := websocket.CloseStatus(err); s == -1 && !errors.Is(err, context.Canceled) {
				c.hub.log.Debug("websocket read ended", "participant", c.p.id, "err", err)
			}
			return
		}
		c.heard()
		c.handle(ctx, data)
	}
}

// handle turns one client frame into its action; what the action answers
// is queued for the writer.
func (c *conn) handle(ctx context.Context, data []byte) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		c.sendError("invalid_frame", "the frame is not a JSON object of a known shape: "+err.Error())
		return
	}
	switch f.Type {
	case "submit":
		if len(f.Event) == 0 || string(f.Event) == "null" {
			c.answer(f.ID, errorReply(http.StatusUnprocessableEntity, "missing_field", "event", "a submit frame needs an event object"))
			return
		}
		c.answer(f.ID, c.hub.cfg.Backend.Submit(ctx, c.who, f.Event))
	case "join":
		c.answer(f.ID, c.hub.cfg.Backend.Join(ctx, c.who, f.SessionID))
	case "leave":
		c.answer(f.ID, c.hub.cfg.Backend.Leave(ctx, c.who, f.SessionID))
	case "ack":
		if f.Seq == nil {
			c.answer(f.ID, errorReply(http.StatusUnprocessableEntity, "missing_field", "seq", "an ack frame needs a seq"))
			return
		}
		c.hub.ack(c.p, *f.Seq)
		if f.ID != "" {
			c.answer(f.ID, Reply{Status: http.StatusOK, Body: json.RawMessage(`{"status":"ok"}`)})
		}
	case "":
		c.sendError("missing_type", "every frame needs a type: submit, join, leave or ack")
	default:
		c.sendError("unknown_type", "unknown frame type "+quote(f.Type)+"; use submit, join, leave or ack")
	}
}

// answer sends a result frame for a frame with an id; without an id only a
// failure is reported, as an error frame.
func (c *conn) answer(id string, r Reply) {
	if id != "" {
		c.queueControl(mustJSON(resultFrame{Type: "result", ID: id, Status: r.Status, Body: r.Body}))
		return
	}
	if r.Status >= 300 {
		c.sendError(r.Code, r.Detail)
	}
}

func (c *conn) sendError(code, detail string) {
	c.queueControl(mustJSON(errorFrame{Type: "error", Code: code, Detail: detail}))
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// errorReply builds a Reply with the gateway's error body.
func errorReply(status int, code, field, detail string) Reply {
	body := map[string]string{"status": "error", "code": code, "detail": detail}
	if field != "" {
		body["field"] = field
	}
	return Reply{Status: status, Body: mustJSON(body), Code: code, Detail: detail}
}
