package sidecar

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchyard-gw/switchyard/internal/wire"
)

func TestTraceparentFollowsAnEventAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	bob, _ := attach(t, nodes[1], "bob", sessionQuery("s1"), nil)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := postJSON(t, nodes[0].URL()+"/v1/gateway/events", event("alice", "s1", "traced"),
		map[string]string{"traceparent": tp, "X-Request-Id": "req-42"})
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, "req-42", r.Header.Get("X-Request-Id"), "a sane request id is echoed")

	f := bob.Next()
	got, _ := f["traceparent"].(string)
	require.True(t, wire.ValidTraceparent(got), "the frame carries a traceparent: %v", f)
	assert.Equal(t, tp[3:35], got[3:35], "same trace id after the peer hop")
	assert.NotEqual(t, tp[36:52], got[36:52], "the hop is a span of its own")

	// Without one, a trace starts at the submit; a bad one is replaced.
	for _, header := range []map[string]string{nil, {"traceparent": "00-zz-bad"}} {
		postJSON(t, nodes[0].URL()+"/v1/gateway/events", event("alice", "s1", "x"), header)
		f := bob.Next()
		assert.True(t, wire.ValidTraceparent(f["traceparent"].(string)))
	}
	r = do(t, http.MethodGet, nodes[0].URL()+"/healthz", nil, map[string]string{"X-Request-Id": "has spaces"})
	assert.NotEqual(t, "has spaces", r.Header.Get("X-Request-Id"))
	assert.NotEmpty(t, r.Header.Get("X-Request-Id"))
}
