package ws

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
)

type echoBackend struct{}

func (echoBackend) Submit(context.Context, Identity, json.RawMessage) Reply {
	return Reply{Status: http.StatusOK, Body: json.RawMessage(`{"status":"ok"}`)}
}
func (echoBackend) Join(context.Context, Identity, string) Reply {
	return errorReply(http.StatusUnprocessableEntity, "invalid_field", "session_id", "no")
}
func (echoBackend) Leave(context.Context, Identity, string) Reply {
	return Reply{Status: http.StatusOK, Body: json.RawMessage(`{"status":"ok"}`)}
}

// FuzzClientFrame: no client frame makes the reader panic, and everything
// it queues for the client is one valid JSON object.
func FuzzClientFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"submit","id":"c1","event":{"event_type":"m"}}`,
		`{"type":"join","id":"j","session_id":"s"}`,
		`{"type":"leave","session_id":"s"}`,
		`{"type":"ack","seq":18446744073709551615}`,
		`{"type":"ack"}`, `{"type":"submit"}`, `{"type":"x"}`, `{}`, `not json`, `[]`, `{"type":1}`,
	} {
		f.Add([]byte(seed))
	}
	h := NewHub(Config{Backend: echoBackend{}, Logger: slog.New(slog.DiscardHandler), MaxControlFrames: 1 << 20})
	f.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	p, _ := h.getOrCreate("fuzzer", "ai")
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &conn{hub: h, who: Identity{ParticipantID: "fuzzer", ParticipantType: "ai"},
			writer: writer{p: p, cfg: &h.cfg, held: true}} // held: no writer, frames stay queued
		c.handle(context.Background(), data)
		for _, frame := range c.ctrl {
			var v map[string]any
			if err := json.Unmarshal(frame, &v); err != nil {
				t.Fatalf("queued a frame that is not JSON: %s", frame)
			}
			if v["type"] != "result" && v["type"] != "error" {
				t.Fatalf("queued a frame of type %v", v["type"])
			}
		}
	})
}
