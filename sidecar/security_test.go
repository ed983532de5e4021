package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/rawws"
)

var testSecret = []byte("a-test-secret-of-enough-length-32b")

func bearerHeader(cred string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + cred}
}

func mint(t *testing.T, sub string, sessions []string, ttl time.Duration) string {
	t.Helper()
	tok, err := MintToken(testSecret, sub, sessions, ttl)
	require.NoError(t, err)
	return tok
}

func secureNode(t *testing.T) *Node {
	return startNode(t, Config{APIKeys: []string{"admin-key"}, TokenSecret: testSecret})
}

func TestTokenSubmitsOnlyAsItselfToItsSessions(t *testing.T) {
	n := secureNode(t)
	bob, _ := attach(t, n, "bob", sessionQuery("s1", "s2"), http.Header{"Authorization": {"Bearer admin-key"}})
	alice := mint(t, "alice", []string{"s1"}, time.Hour)
	eventsURL := n.URL() + "/v1/gateway/events"

	r := postJSON(t, eventsURL, event("alice", "s1", "mine"), bearerHeader(alice))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	assert.Equal(t, "mine", bob.Next()["event"].(map[string]any)["message"])

	cases := map[string]struct {
		ev    map[string]any
		field string
	}{
		"as someone else":    {event("mallory", "s1", "x"), "sender_id"},
		"to another session": {event("alice", "s2", "x"), "session_id"},
		"direct, no session": {map[string]any{"sender_id": "alice", "sender_type": "ai", "event_type": "m", "recipient_id": "bob"}, "session_id"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := postJSON(t, eventsURL, tc.ev, bearerHeader(alice))
			assert.Equal(t, http.StatusForbidden, r.Status, "%s", r.Raw)
			assert.Equal(t, "forbidden", r.Body["code"])
			assert.Equal(t, tc.field, r.Body["field"])
		})
	}

	// Nothing a token may not do reached bob.
	submit2 := postJSON(t, eventsURL, event("carol", "s1", "next"), bearerHeader("admin-key"))
	require.Equal(t, http.StatusOK, submit2.Status)
	assert.Equal(t, "next", bob.Next()["event"].(map[string]any)["message"])

	// A token may not use the endpoints between nodes, nor act for others.
	r = postJSON(t, n.URL()+"/v1/gateway/deliveries", map[string]any{"recipient_id": "bob",
		"event": event("alice", "s1", "sneaky")}, bearerHeader(alice))
	assert.Equal(t, http.StatusForbidden, r.Status)
	r = do(t, http.MethodPut, n.URL()+"/v1/gateway/sessions/s1/participants/bob", nil, bearerHeader(alice))
	assert.Equal(t, http.StatusForbidden, r.Status)
	r = do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s2", nil, bearerHeader(alice))
	assert.Equal(t, http.StatusForbidden, r.Status)
	r = do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s1", nil, bearerHeader(alice))
	assert.Equal(t, http.StatusOK, r.Status)
}

func TestBadTokensAre401(t *testing.T) {
	n := secureNode(t)
	expired := mint(t, "alice", nil, -time.Hour)
	otherSecret, err := MintToken([]byte("another-secret-another-secret-xx"), "alice", nil, time.Hour)
	require.NoError(t, err)
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString(testSecret)
	require.NoError(t, err)
	noneAlg, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	future, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice",
		"exp": time.Now().Add(2 * time.Hour).Unix(), "nbf": time.Now().Add(time.Hour).Unix()}).SignedString(testSecret)
	require.NoError(t, err)

	for name, tc := range map[string]struct{ tok, code string }{
		"expired":           {expired, "token_expired"},
		"not valid yet":     {future, "token_expired"},
		"wrong secret":      {otherSecret, "unauthorized"},
		"no exp":            {noExp, "unauthorized"},
		"alg none":          {noneAlg, "unauthorized"},
		"garbage with dots": {"a.b.c", "unauthorized"},
	} {
		t.Run(name, func(t *testing.T) {
			r := postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s1", "x"), bearerHeader(tc.tok))
			assert.Equal(t, http.StatusUnauthorized, r.Status)
			assert.Equal(t, tc.code, r.Body["code"])
			assert.NotContains(t, string(r.Raw), tc.tok, "a token is never echoed")
			_, resp, err := dial(n, "alice", nil, http.Header{"Authorization": {"Bearer " + tc.tok}})
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		})
	}

	// Within the leeway, a just-expired token still works.
	leeway, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice",
		"exp": time.Now().Add(-5 * time.Second).Unix()}).SignedString(testSecret)
	require.NoError(t, err)
	r := do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, bearerHeader(leeway))
	assert.Equal(t, http.StatusOK, r.Status)
}

func TestTokenAttachesOnlyAsItself(t *testing.T) {
	n := secureNode(t)
	alice := mint(t, "alice", []string{"s1"}, time.Hour)

	// As itself, via the query for browsers: welcome.
	c, w := attach(t, n, "alice", url.Values{"session_id": {"s1"}, "access_token": {alice}}, nil)
	assert.Equal(t, "alice", w["participant_id"])

	// Joining a session the token does not allow: a 403 result, still open.
	c.Send(map[string]any{"type": "join", "id": "j", "session_id": "s9"})
	res := c.Next()
	assert.Equal(t, float64(403), res["status"])
	// Submitting as someone else over the socket: 403 result.
	c.Send(map[string]any{"type": "submit", "id": "c", "event": map[string]any{"sender_id": "bob", "event_type": "m", "session_id": "s1"}})
	assert.Equal(t, float64(403), c.Next()["status"])

	// Attaching as someone else, or to a session not allowed: close 1008.
	for name, q := range map[string]url.Values{
		"as bob":       {"participant_id": {"bob"}, "access_token": {alice}},
		"into session": {"participant_id": {"alice"}, "session_id": {"s2"}, "access_token": {alice}},
	} {
		t.Run(name, func(t *testing.T) {
			conn, resp, err := dial(n, "", q, nil)
			if resp != nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			require.NoError(t, err)
			defer conn.CloseNow()
			_, _, err = conn.Read(context.Background())
			assert.Equal(t, websocket.StatusPolicyViolation, websocket.CloseStatus(err))
		})
	}
	// And bob was never created by those attempts.
	r := do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s2", nil, bearerHeader("admin-key"))
	assert.Equal(t, http.StatusNotFound, r.Status)
}

func TestAllowedOrigins(t *testing.T) {
	n := startNode(t, Config{AllowedOrigins: []string{"app.example.com"}})
	for origin, ok := range map[string]bool{
		"https://app.example.com":  true,
		"https://evil.example.com": false,
	} {
		conn, resp, err := dial(n, "p", nil, http.Header{"Origin": {origin}})
		if ok {
			require.NoError(t, err, origin)
			_ = conn.CloseNow()
		} else {
			require.Error(t, err, origin)
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		}
	}
	// No Origin header (not a browser): allowed.
	conn, _, err := dial(n, "q", nil, nil)
	require.NoError(t, err)
	_ = conn.CloseNow()
}

func TestRateLimitPerCredential(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"k1", "k2"}, RateLimit: 1, RateBurst: 3})
	attach(t, n, "bob", sessionQuery("s1"), http.Header{"Authorization": {"Bearer k2"}}) // one of k2's tokens
	eventsURL := n.URL() + "/v1/gateway/events"
	for i := range 3 - 0 {
		r := postJSON(t, eventsURL, event("a", "s1", strconv.Itoa(i)), bearerHeader("k1"))
		require.Equal(t, http.StatusOK, r.Status, "request %d within the burst", i)
	}
	r := postJSON(t, eventsURL, event("a", "s1", "over"), bearerHeader("k1"))
	require.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "rate_limited", r.Body["code"])
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, secs, 1)
	// Another credential has its own bucket; health and reads are not limited.
	assert.Equal(t, http.StatusOK, postJSON(t, eventsURL, event("a", "s1", "k2"), bearerHeader("k2")).Status)
	assert.Equal(t, http.StatusOK, do(t, http.MethodGet, n.URL()+"/healthz", nil, nil).Status)
	assert.Equal(t, http.StatusOK, do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, bearerHeader("k1")).Status)
}

func TestRateLimiterRefills(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(10, 2, func() time.Time { return now })
	_, ok := l.allow("k")
	assert.True(t, ok)
	_, ok = l.allow("k")
	assert.True(t, ok)
	wait, ok := l.allow("k")
	assert.False(t, ok)
	assert.Equal(t, 100*time.Millisecond, wait)
	now = now.Add(100 * time.Millisecond)
	_, ok = l.allow("k")
	assert.True(t, ok, "one token refilled")
	now = now.Add(time.Hour)
	_, _ = l.allow("other")
	assert.Len(t, l.buckets, 1, "idle full buckets are forgotten")
}

// TestSlowlorisDoesNotStopTheNode: 500 connections that send headers a byte
// at a time, or nothing, do not keep the node from serving others, and the
// header timeout cuts them.
func TestSlowlorisDoesNotStopTheNode(t *testing.T) {
	n := startNode(t, Config{ReadHeaderTimeout: 500 * time.Millisecond, IdleTimeout: time.Second})
	const conns = 500
	var wg sync.WaitGroup
	cut := make(chan struct{}, conns)
	for i := range conns {
		c, err := net.Dial("tcp", n.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 { // a byte now and then, never a whole header
				for _, b := range []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") {
					if _, err := c.Write([]byte{b}); err != nil {
						break
					}
					time.Sleep(50 * time.Millisecond) // the attack's pace, not a wait for a condition
				}
			}
			// The node must close it (EOF or reset), not our deadline.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.ReadAll(c)
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				cut <- struct{}{}
			}
		}()
	}
	// Meanwhile the node serves others.
	for range 20 {
		r := do(t, http.MethodGet, n.URL()+"/healthz", nil, nil)
		require.Equal(t, http.StatusOK, r.Status)
	}
	wg.Wait()
	assert.Len(t, cut, conns, "every slow connection was cut by the node")
}

func TestSecretsStayOutOfMetricsAndErrors(t *testing.T) {
	n := secureNode(t)
	alice := mint(t, "alice", nil, time.Hour)
	postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "nobody-here", "x"), bearerHeader(alice))
	postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s", "x"), bearerHeader("wrong-key"))
	m := do(t, http.MethodGet, n.URL()+"/metrics", nil, nil)
	body := string(m.Raw)
	for _, secret := range []string{"admin-key", alice, "wrong-key", string(testSecret)} {
		assert.False(t, strings.Contains(body, secret), "metrics leak a secret")
	}
}

// refusedAttach dials participant and requires the attach to be refused
// before the upgrade; it returns the HTTP answer.
func refusedAttach(t *testing.T, n *Node, participant string, header http.Header) apiResponse {
	t.Helper()
	conn, resp, err := dial(n, participant, nil, header)
	if err == nil {
		_ = conn.CloseNow()
	}
	require.Error(t, err, "the attach of %s must be refused", participant)
	require.NotNil(t, resp)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := apiResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	require.NoError(t, json.Unmarshal(raw, &out.Body), "answer is not JSON: %s", raw)
	return out
}

// TestConnectionsPerParticipantAreCapped: past its cap a participant's
// attach is refused with 429 while others still attach, and a slot comes
// back when one of its connections closes.
func TestConnectionsPerParticipantAreCapped(t *testing.T) {
	n := startNode(t, Config{MaxConnectionsPerParticipant: 2})
	first, _ := attach(t, n, "alice", nil, nil)
	attach(t, n, "alice", nil, nil)

	r := refusedAttach(t, n, "alice", nil)
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "too_many_connections", r.Body["code"])
	assert.Equal(t, "participant_id", r.Body["field"])
	assert.Equal(t, "2", r.Header.Get("Retry-After"), "when to try again, as SPEC's other 429s say")
	assert.EqualValues(t, 2, r.Body["retry_after"])
	attach(t, n, "bob", nil, nil) // others still attach

	require.NoError(t, first.Conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { // once the node has seen it go
		conn, resp, err := dial(n, "alice", nil, nil)
		if err != nil { // (assert, not require: this runs in Eventually's goroutine)
			if assert.NotNil(t, resp) {
				assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
			}
			return false
		}
		t.Cleanup(func() { _ = conn.CloseNow() })
		return true
	}, 10*time.Second, 10*time.Millisecond)
}

// TestConnectionsPerCredentialAreCapped: one credential (a token's subject,
// however many tokens it has; an API key) holds at most its cap of a
// node's connections, so others still attach.
func TestConnectionsPerCredentialAreCapped(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"admin-key"}, TokenSecret: testSecret,
		MaxConnections: 10, MaxConnectionsPerCredential: 4})
	alice := http.Header{"Authorization": {"Bearer " + mint(t, "alice", nil, time.Hour)}}
	for range 4 {
		attach(t, n, "alice", nil, alice)
	}
	r := refusedAttach(t, n, "alice", alice)
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "too_many_connections", r.Body["code"])
	another := http.Header{"Authorization": {"Bearer " + mint(t, "alice", []string{"s1"}, 2*time.Hour)}}
	assert.Equal(t, http.StatusTooManyRequests, refusedAttach(t, n, "alice", another).Status,
		"another token of the same subject is the same credential")

	admin := http.Header{"Authorization": {"Bearer admin-key"}}
	for _, p := range []string{"p1", "p2", "p3", "p4"} {
		attach(t, n, p, nil, admin)
	}
	r = refusedAttach(t, n, "p5", admin)
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "too_many_connections", r.Body["code"])

	attach(t, n, "carol", nil, http.Header{"Authorization": {"Bearer " + mint(t, "carol", nil, time.Hour)}})
	// The node-wide cap is still 503: one slot is left, then none.
	attach(t, n, "dave", nil, http.Header{"Authorization": {"Bearer " + mint(t, "dave", nil, time.Hour)}})
	r = refusedAttach(t, n, "erin", http.Header{"Authorization": {"Bearer " + mint(t, "erin", nil, time.Hour)}})
	assert.Equal(t, http.StatusServiceUnavailable, r.Status)
}

// TestSilentConnectionGivesItsSlotsBack: a client that completed the
// upgrade and then went silent (a half-open connection: no pong, no frame)
// is dropped once --ping-timeout passes after its ping, and its
// participant's and credential's slots come back.
func TestSilentConnectionGivesItsSlotsBack(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"admin-key"}, MaxConnectionsPerParticipant: 1,
		MaxConnectionsPerCredential: 1, PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	admin := http.Header{"Authorization": {"Bearer admin-key"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	silent, err := rawws.Dial(ctx, &net.Dialer{}, "ws"+strings.TrimPrefix(n.URL(), "http")+wsPath+"?participant_id=alice", admin)
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() }) // it never reads: the ping goes unanswered

	require.Eventually(t, func() bool {
		conn, resp, err := dial(n, "alice", nil, admin)
		if err != nil { // (assert, not require: this runs in Eventually's goroutine)
			if assert.NotNil(t, resp) {
				assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "refused while the silent one holds the slot")
			}
			return false
		}
		t.Cleanup(func() { _ = conn.CloseNow() })
		return true
	}, 10*time.Second, 10*time.Millisecond, "the silent connection's slots never came back")
	assert.Equal(t, float64(1), counterOf(t, n.metrics.Hub.PingTimeouts))
}

func TestConnectionCapDefaults(t *testing.T) {
	cfg := Config{MaxConnections: 200}.withDefaults()
	assert.Equal(t, 8, cfg.MaxConnectionsPerParticipant)
	assert.Equal(t, 50, cfg.MaxConnectionsPerCredential, "a quarter of the node's connections")
	assert.Equal(t, 1, Config{MaxConnections: 2}.withDefaults().MaxConnectionsPerCredential, "at least one")
	assert.Equal(t, 30*time.Second, cfg.PingInterval)
	assert.Equal(t, 10*time.Second, cfg.PingTimeout)
}

// results sends frames on c and returns the result frames answering those
// with an id, in order, skipping the events delivered meanwhile.
func results(c *client, frames ...map[string]any) []map[string]any {
	want := 0
	for _, f := range frames {
		c.Send(f)
		if f["id"] != nil {
			want++
		}
	}
	var out []map[string]any
	for len(out) < want {
		if f := c.Next(); f["type"] == "result" {
			out = append(out, f)
		}
	}
	return out
}

func submitFrame(id, sender, session string) map[string]any {
	return map[string]any{"type": "submit", "id": id, "event": event(sender, session, id)}
}

// TestRateLimitCountsWebSocketFrames: submit, join and leave frames draw
// from the bucket of the connection's credential, the one its REST
// requests draw from: with a burst of 8 and a rate too low to refill
// during the test, exactly 8 requests and frames are let through in all;
// the rest are answered 429 rate_limited with retry_after and not
// executed. Acks are not limited.
func TestRateLimitCountsWebSocketFrames(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"k", "other"}, RateLimit: 0.001, RateBurst: 8})
	k := http.Header{"Authorization": {"Bearer k"}}
	alice, _ := attach(t, n, "alice", sessionQuery("s1"), k) // 1
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), k)     // 2
	eventsURL := n.URL() + "/v1/gateway/events"
	for _, m := range []string{"rest-1", "rest-2"} { // 3, 4
		require.Equal(t, http.StatusOK, postJSON(t, eventsURL, event("carol", "s1", m), bearerHeader("k")).Status)
	}

	var frames []map[string]any
	for i := range 6 {
		frames = append(frames, submitFrame("c"+strconv.Itoa(i), "bob", "s1"))
	}
	frames = append(frames,
		map[string]any{"type": "join", "id": "j", "session_id": "s2"},
		map[string]any{"type": "leave", "id": "l", "session_id": "s1"})
	res := results(bob, frames...)
	accepted := 0
	for i, r := range res {
		switch r["status"] {
		case float64(http.StatusOK):
			accepted++
			assert.Less(t, i, 4, "frames are let through in order until the bucket is empty")
		case float64(http.StatusTooManyRequests):
			body := r["body"].(map[string]any)
			assert.Equal(t, "rate_limited", body["code"], "%v", r)
			assert.GreaterOrEqual(t, body["retry_after"], float64(1), "%v", r)
		default:
			t.Errorf("frame %v answered %v", r["id"], r)
		}
	}
	assert.Equal(t, 4, accepted, "8 in all: 2 attaches, 2 REST submits, 4 frames")

	// What was refused was not done: alice got the 2 REST and 4 frame
	// submits only, and bob is still in s1 alone of his sessions.
	for _, want := range []string{"rest-1", "rest-2", "c0", "c1", "c2", "c3"} {
		assert.Equal(t, want, alice.Next()["event"].(map[string]any)["message"])
	}
	s := do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s1", nil, bearerHeader("other"))
	require.Equal(t, http.StatusOK, s.Status)
	assert.Len(t, s.Body["participants"], 2, "%s", s.Raw)
	assert.Equal(t, http.StatusNotFound, do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s2", nil, bearerHeader("other")).Status)

	// A frame without an id: an error frame. An ack: not limited.
	bob.Send(map[string]any{"type": "submit", "event": event("bob", "s1", "no-id")})
	f := bob.Next()
	for f["type"] == "event" { // bob's own events may come after the results
		f = bob.Next()
	}
	assert.Equal(t, "error", f["type"])
	assert.Equal(t, "rate_limited", f["code"])
	ack := results(bob, map[string]any{"type": "ack", "id": "a", "seq": 1})
	assert.Equal(t, float64(http.StatusOK), ack[0]["status"])

	// REST on the same key is refused too; another key has its own bucket.
	r := postJSON(t, eventsURL, event("carol", "s1", "late"), bearerHeader("k"))
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, r.Header.Get("Retry-After"), strconv.Itoa(int(r.Body["retry_after"].(float64))))
	assert.Equal(t, http.StatusOK, postJSON(t, eventsURL, event("carol", "s1", "other"), bearerHeader("other")).Status)
	assert.Equal(t, "other", alice.Next()["event"].(map[string]any)["message"], "no refused submit reached alice")
}

// TestRateLimitCountsTokenFramesBySubject: a participant token's frames
// draw from its subject's bucket, which every token of that subject
// shares.
func TestRateLimitCountsTokenFramesBySubject(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"admin-key"}, TokenSecret: testSecret, RateLimit: 0.001, RateBurst: 3})
	attach(t, n, "bob", sessionQuery("s1"), http.Header{"Authorization": {"Bearer admin-key"}})
	alice, _ := attach(t, n, "alice", sessionQuery("s1"),
		http.Header{"Authorization": {"Bearer " + mint(t, "alice", []string{"s1"}, time.Hour)}}) // 1

	res := results(alice, submitFrame("c0", "alice", "s1"), submitFrame("c1", "alice", "s1"), submitFrame("c2", "alice", "s1"))
	assert.Equal(t, float64(http.StatusOK), res[0]["status"])
	assert.Equal(t, float64(http.StatusOK), res[1]["status"])
	assert.Equal(t, float64(http.StatusTooManyRequests), res[2]["status"])

	another := mint(t, "alice", nil, 2*time.Hour)
	r := postJSON(t, n.URL()+"/v1/gateway/events", event("alice", "s1", "x"), bearerHeader(another))
	assert.Equal(t, http.StatusTooManyRequests, r.Status, "another token of the same subject shares the bucket")
	r = postJSON(t, n.URL()+"/v1/gateway/events", event("carol", "s1", "x"), bearerHeader("admin-key"))
	assert.Equal(t, http.StatusOK, r.Status, "another credential has its own bucket")
}
