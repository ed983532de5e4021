package sidecar

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/rawws"
)

// observe attaches a read-only observer of sessions to n with cred (an
// API key or token, sent as access_token as a browser does) and returns it
// after its welcome frame.
func observe(t *testing.T, n *Node, cred string, sessions ...string) (*client, map[string]any) {
	t.Helper()
	q := url.Values{"observe": {"1"}, "session_id": sessions}
	if cred != "" {
		q.Set("access_token", cred)
	}
	return attach(t, n, "", q, nil)
}

// dialObserver dials an observer attach and returns the HTTP status of a
// refusal (0 when it was accepted).
func dialObserver(t *testing.T, n *Node, q url.Values) int {
	t.Helper()
	q.Set("observe", "1")
	c, resp, err := dial(n, "", q, nil)
	if err == nil {
		_ = c.CloseNow()
		return 0
	}
	require.NotNil(t, resp, "dial failed without an answer: %v", err)
	defer resp.Body.Close()
	return resp.StatusCode
}

func TestObserverSeesSessionEventsWithoutBeingAParticipant(t *testing.T) {
	n := secureNode(t)
	admin := http.Header{"Authorization": {"Bearer admin-key"}}
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), admin)
	attach(t, n, "carol", sessionQuery("s2"), admin)
	obs, w := observe(t, n, "admin-key", "s1")
	assert.Equal(t, true, w["observer"])
	assert.Equal(t, n.Name(), w["node"])
	assert.Equal(t, []any{"s1"}, w["sessions"])

	// Not a recipient: the submit counts bob alone; bob gets it as before.
	r := postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s1", "seen"), bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	assert.Equal(t, float64(1), r.Body["recipients"], "an observer is not counted")
	assert.Equal(t, "seen", bob.Next()["event"].(map[string]any)["message"])
	f := obs.Next()
	assert.Equal(t, "event", f["type"])
	assert.Equal(t, "s1", f["session_id"])
	assert.Equal(t, r.Body["event_id"], f["event_id"])
	assert.NotContains(t, f, "seq", "an observer has no mailbox")
	assert.Equal(t, "seen", f["event"].(map[string]any)["message"])

	// Another session's event does not reach it: the next it sees is s1's.
	r = postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s2", "elsewhere"), bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	r = postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s1", "second"), bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	assert.Equal(t, "second", obs.Next()["event"].(map[string]any)["message"])

	// Not listed: the session shows bob alone, the node two participants.
	s := do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s1", nil, bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, s.Status, "%s", s.Raw)
	require.Len(t, s.Body["participants"], 1)
	assert.Equal(t, "bob", s.Body["participants"].([]any)[0].(map[string]any)["participant_id"])
	p := do(t, http.MethodGet, n.URL()+"/v1/gateway/participants", nil, bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, p.Status, "%s", p.Raw)
	assert.Equal(t, float64(2), p.Body["total"])

	// Nobody can address it: a session with only an observer has no
	// recipient.
	r = postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s3", "nobody"), bearerHeader("admin-key"))
	assert.Equal(t, http.StatusNotFound, r.Status, "%s", r.Raw)

	// It cannot send: a data frame closes it with 1008.
	obs.Send(map[string]any{"type": "submit", "id": "c1", "event": event("x", "s1", "no")})
	assert.Equal(t, websocket.StatusPolicyViolation, obs.CloseStatus())
}

func TestObserveNeedsAnAPIKeyAndASession(t *testing.T) {
	n := secureNode(t)
	tok := mint(t, "bob", []string{"s1"}, time.Hour)
	assert.Equal(t, http.StatusForbidden, dialObserver(t, n, url.Values{"session_id": {"s1"}, "access_token": {tok}}),
		"a participant token may not observe")
	assert.Equal(t, http.StatusUnauthorized, dialObserver(t, n, url.Values{"session_id": {"s1"}}))
	assert.Equal(t, http.StatusUnprocessableEntity, dialObserver(t, n, url.Values{"access_token": {"admin-key"}}),
		"observe without a session")
	assert.Equal(t, 0, dialObserver(t, n, url.Values{"session_id": {"s1"}, "access_token": {"admin-key"}}))

	// A page of another origin may not observe (--allowed-origins), as it
	// may not attach.
	q := url.Values{"observe": {"1"}, "session_id": {"s1"}, "access_token": {"admin-key"}}
	c, resp, err := dial(n, "", q, http.Header{"Origin": {"https://evil.example.com"}})
	if err == nil {
		_ = c.CloseNow()
	}
	require.NotNil(t, resp)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
}

func TestObserversAreCappedPerNode(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"k"}, MaxObservers: 1})
	first, _ := observe(t, n, "k", "s1")
	assert.Equal(t, http.StatusServiceUnavailable, dialObserver(t, n, url.Values{"session_id": {"s1"}, "access_token": {"k"}}))
	require.NoError(t, first.Conn.Close(websocket.StatusNormalClosure, ""))
	// The place frees once the node has seen the close.
	require.Eventually(t, func() bool {
		return dialObserver(t, n, url.Values{"session_id": {"s1"}, "access_token": {"k"}}) == 0
	}, 5*time.Second, 10*time.Millisecond)
}

// TestSilentObserverIsCutAndItsPlaceFreed: an observer that vanished
// without closing (it never answers a ping) is cut, and its place under
// --max-observers comes back.
func TestSilentObserverIsCutAndItsPlaceFreed(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"k"}, MaxObservers: 1,
		PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := url.Values{"session_id": {"s1"}, "access_token": {"k"}}
	silent, err := rawws.Dial(ctx, &net.Dialer{}, "ws"+strings.TrimPrefix(n.URL(), "http")+wsPath+"?observe=1&"+q.Encode(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() }) // it never reads: its pings go unanswered

	require.Eventually(t, func() bool { return dialObserver(t, n, q) == 0 },
		10*time.Second, 10*time.Millisecond, "the silent observer's place never came back")
	assert.Equal(t, float64(1), counterOf(t, n.metrics.Hub.PingTimeouts))
}

func TestObserverSeesEventsSubmittedHereAndDeliveredHere(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	bob, _ := attach(t, nodes[1], "bob", sessionQuery("s1"), nil)
	atSubmitter, _ := observe(t, nodes[0], "", "s1")
	atHome, _ := observe(t, nodes[1], "", "s1")
	r := submit(t, nodes[0], event("alice", "s1", "across"))
	assert.Equal(t, float64(1), r.Body["recipients"])
	assert.Equal(t, "across", bob.Next()["event"].(map[string]any)["message"])
	for _, o := range []*client{atSubmitter, atHome} {
		f := o.Next()
		assert.Equal(t, r.Body["event_id"], f["event_id"])
		assert.Equal(t, "across", f["event"].(map[string]any)["message"])
	}
}

func TestObserverClosedWith1001WhenTheNodeDrains(t *testing.T) {
	n := startNode(t, Config{})
	o, _ := observe(t, n, "", "s1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(ctx) }()
	assert.Equal(t, websocket.StatusGoingAway, o.CloseStatus())
	require.NoError(t, <-done)
	// Shutdown returned after the observer's handler was done.
	n.watchers.mu.Lock()
	count := n.watchers.count
	n.watchers.mu.Unlock()
	assert.Equal(t, 0, count)
	select {
	case <-n.watchers.idle:
	default:
		t.Fatal("shutdown returned before its observers were gone")
	}
	_, ok := n.watchers.add([]string{"s1"})
	assert.False(t, ok, "a draining node takes no observer")
}

func TestObserverThatFallsBehindIsDropped(t *testing.T) {
	obs := newObservers(4)
	o, ok := obs.add([]string{"s1"})
	require.True(t, ok)
	for range observerBuffer {
		obs.publish("s1", "e", []byte(`{}`))
	}
	select {
	case <-o.slow:
		t.Fatal("dropped with room left")
	default:
	}
	obs.publish("s1", "e", []byte(`{}`)) // one too many: nothing blocks, the observer is told
	select {
	case <-o.slow:
	default:
		t.Fatal("an observer past its buffer was not dropped")
	}
	obs.publish("s1", "e", []byte(`{}`)) // and again: no second close
	obs.remove(o)
	obs.remove(o)
	assert.Equal(t, 0, obs.count)
	assert.Empty(t, obs.bySession)
}

func TestLocalParticipantsArePagedAndNeedAnAPIKey(t *testing.T) {
	n := secureNode(t)
	admin := http.Header{"Authorization": {"Bearer admin-key"}}
	for _, id := range []string{"c", "a", "b"} {
		attach(t, n, id, sessionQuery("s-"+id), admin)
	}
	get := func(query, cred string) apiResponse {
		return do(t, http.MethodGet, n.URL()+"/v1/gateway/participants"+query, nil, bearerHeader(cred))
	}
	ids := func(r apiResponse) []string {
		var out []string
		for _, p := range r.Body["participants"].([]any) {
			out = append(out, p.(map[string]any)["participant_id"].(string))
		}
		return out
	}
	r := get("", "admin-key")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	assert.Equal(t, []string{"a", "b", "c"}, ids(r))
	assert.Equal(t, n.Name(), r.Body["node"])
	assert.Equal(t, false, r.Body["truncated"])
	first := r.Body["participants"].([]any)[0].(map[string]any)
	assert.Equal(t, []any{"s-a"}, first["sessions"])
	assert.Equal(t, true, first["online"])

	r = get("?limit=2", "admin-key")
	assert.Equal(t, []string{"a", "b"}, ids(r))
	assert.Equal(t, true, r.Body["truncated"])
	assert.Equal(t, float64(3), r.Body["total"])
	r = get("?limit=2&after=b", "admin-key")
	assert.Equal(t, []string{"c"}, ids(r))
	assert.Equal(t, false, r.Body["truncated"])

	assert.Equal(t, http.StatusUnprocessableEntity, get("?limit=0", "admin-key").Status)
	assert.Equal(t, http.StatusUnprocessableEntity, get("?limit=1001", "admin-key").Status)
	assert.Equal(t, http.StatusForbidden, get("", mint(t, "a", nil, time.Hour)).Status)
	assert.Equal(t, http.StatusUnauthorized, get("", "wrong").Status)
}

func TestConsoleServedOnlyWithUI(t *testing.T) {
	off := startNode(t, Config{})
	r := do(t, http.MethodGet, off.URL()+"/ui", nil, nil)
	assert.Equal(t, http.StatusNotFound, r.Status)

	on := startNode(t, Config{APIKeys: []string{"k"}, UI: true})
	r = do(t, http.MethodGet, on.URL()+"/ui", nil, nil) // the page is public: no key
	require.Equal(t, http.StatusOK, r.Status)
	assert.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/html"))
	assert.Contains(t, r.Header.Get("Content-Security-Policy"), "connect-src 'self'")
	assert.Contains(t, string(r.Raw), `<script src="/ui/app.js">`)
	r = do(t, http.MethodGet, on.URL()+"/ui/app.js", nil, nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/javascript"))
	assert.Contains(t, string(r.Raw), "observe")
	assert.Equal(t, http.StatusNotFound, do(t, http.MethodGet, on.URL()+"/ui/other", nil, nil).Status)
	// The data still needs the key.
	assert.Equal(t, http.StatusUnauthorized, do(t, http.MethodGet, on.URL()+"/v1/gateway/members", nil, nil).Status)
}
