package sidecar

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTokenMayNotRegisterAnExternalGateway: a participant token that submits
// with a sender_gateway_url is refused 403 naming the field, over REST and
// over the WebSocket submit frame, and registers nobody (the PUT endpoint
// already refuses a gateway_url from a token).
func TestTokenMayNotRegisterAnExternalGateway(t *testing.T) {
	fake := newCFGateway(t, nil)
	n := startNode(t, Config{APIKeys: []string{"admin-key"}, TokenSecret: testSecret, AllowGateways: []string{fake.URL()}})
	attach(t, n, "bob", sessionQuery("s1"), http.Header{"Authorization": {"Bearer admin-key"}})
	alice := mint(t, "alice", []string{"s1"}, time.Hour)

	ev := event("alice", "s1", "over REST")
	ev["sender_gateway_url"] = fake.URL()
	r := postJSON(t, n.URL()+apiEventsPath, ev, bearerHeader(alice))
	apiRequireError(t, r, http.StatusForbidden, "forbidden", "sender_gateway_url")

	// carol attaches with her token and submits a frame naming a gateway.
	carol, _ := attach(t, n, "carol", url.Values{"session_id": {"s1"}, "access_token": {mint(t, "carol", nil, time.Hour)}}, nil)
	carol.send(map[string]any{"type": "submit", "id": "c1", "event": map[string]any{
		"event_type": "message", "session_id": "s1", "message": "over WS", "sender_gateway_url": fake.URL()}})
	res := carol.next()
	require.Equal(t, "result", res["type"], "%v", res)
	assert.Equal(t, float64(http.StatusForbidden), res["status"], "%v", res)
	body, _ := res["body"].(map[string]any)
	assert.Equal(t, "sender_gateway_url", body["field"], "%v", res)

	view, _ := cfSession(n.URL(), "s1", bearerHeader("admin-key"))
	assert.NotContains(t, view, "alice", "a refused submit registers nobody")
	assert.Empty(t, view["carol"][0]["gateway_url"], "carol stays a participant of this node, not an external one")
	assert.Empty(t, fake.requests())
}
