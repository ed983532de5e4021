package sidecar

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
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
	carol.Send(map[string]any{"type": "submit", "id": "c1", "event": map[string]any{
		"event_type": "message", "session_id": "s1", "message": "over WS", "sender_gateway_url": fake.URL()}})
	res := carol.Next()
	require.Equal(t, "result", res["type"], "%v", res)
	assert.Equal(t, float64(http.StatusForbidden), res["status"], "%v", res)
	body, _ := res["body"].(map[string]any)
	assert.Equal(t, "sender_gateway_url", body["field"], "%v", res)

	view, _ := cfSession(n.URL(), "s1", bearerHeader("admin-key"))
	assert.NotContains(t, view, "alice", "a refused submit registers nobody")
	assert.Empty(t, view["carol"][0]["gateway_url"], "carol stays a participant of this node, not an external one")
	assert.Empty(t, fake.requests())
}

// directoryTap is a loopback reverse proxy in front of a node, used as its
// AdvertiseURL, that keeps the body of every directory push the node
// receives from its peers: what registering an external participant costs
// the cluster, counted.
type directoryTap struct {
	srv    *httptest.Server
	ready  chan struct{}
	target atomic.Pointer[url.URL]
	mu     sync.Mutex
	pushes [][]byte
}

func newDirectoryTap(t testing.TB) *directoryTap {
	tap := &directoryTap{ready: make(chan struct{})}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(tap.target.Load()) }}
	tap.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-tap.ready:
		case <-r.Context().Done():
			return
		}
		if r.URL.Path != directoryPath {
			rp.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
		// Counted once the node answered: it has applied the push.
		tap.mu.Lock()
		tap.pushes = append(tap.pushes, body)
		tap.mu.Unlock()
	}))
	t.Cleanup(tap.srv.Close)
	return tap
}

func (tap *directoryTap) setTarget(n *Node) {
	tap.target.Store(&url.URL{Scheme: "http", Host: n.Addr().String()})
	close(tap.ready)
}

// mentioning counts the pushes so far whose body names participant.
func (tap *directoryTap) mentioning(participant string) int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	n := 0
	for _, b := range tap.pushes {
		if bytes.Contains(b, []byte(strconv.Quote(participant))) {
			n++
		}
	}
	return n
}

// TestExternalSenderIsRegisteredOnceAndOnlyWhenAccepted: a submit with
// sender_gateway_url answered 404 registers nobody; an accepted one
// registers the sender, and repeating it (same session, same gateway)
// changes nothing in the directory: no push to the peers mentions the
// sender again.
func TestExternalSenderIsRegisteredOnceAndOnlyWhenAccepted(t *testing.T) {
	fake := newCFGateway(t, nil)
	tap := newDirectoryTap(t)
	nodes := cfCluster(t, 2, Config{AllowGateways: []string{fake.URL()}}, nil, func(i int, c *Config) {
		if i == 1 {
			c.AdvertiseURL = tap.srv.URL
		}
	})
	tap.setTarget(nodes[1])
	n1, n2 := nodes[0], nodes[1]

	// 404: nobody to deliver to, and nobody registered.
	ev := event("outsider", "empty", "anyone?")
	ev["sender_gateway_url"] = fake.URL()
	apiRequireError(t, postJSON(t, n1.URL()+apiEventsPath, ev, nil), http.StatusNotFound, "recipient_not_found", "")
	_, status := cfSession(n1.URL(), "empty", nil)
	assert.Equal(t, http.StatusNotFound, status, "a submit answered 404 registers nobody")

	// Accepted: registered, and the peer hears of it.
	bob, _ := attach(t, n1, "bob", sessionQuery("s1"), nil)
	ev = event("outsider", "s1", "hello")
	ev["sender_gateway_url"] = fake.URL()
	submit(t, n1, ev)
	apiNextEvent(t, bob, 1)
	require.Eventually(t, func() bool { return tap.mentioning("outsider") > 0 }, 10*time.Second, 10*time.Millisecond,
		"node 2 never got a push registering the sender")
	view, _ := cfSession(n2.URL(), "s1", nil)
	require.Len(t, view["outsider"], 1, "node 2 routes to the external sender")
	before := tap.mentioning("outsider")

	// The same submit again and again: delivered each time, registered once.
	const repeats = 30
	for i := range repeats {
		submit(t, n1, ev)
		_, inner := apiNextEvent(t, bob, uint64(i+2))
		assert.Equal(t, "hello", inner["message"])
	}
	// A marker change behind them: once its push reached node 2, every
	// push queued before it has too (node 1 pushes in order).
	attach(t, n1, "marker", sessionQuery("s-marker"), nil)
	require.Eventually(t, func() bool { return tap.mentioning("marker") > 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, before, tap.mentioning("outsider"),
		"%d repeated submits from a registered external sender pushed directory changes", repeats)
	assert.Empty(t, fake.requests(), "the sender does not get its own events")
}

// externalSubmit is a submit from sender to session naming gateway as its
// sender_gateway_url.
func externalSubmit(t testing.TB, n *Node, sender, session, gateway string, header map[string]string) apiResponse {
	t.Helper()
	ev := event(sender, session, "from outside")
	ev["sender_gateway_url"] = gateway
	return postJSON(t, n.URL()+apiEventsPath, ev, header)
}

// TestExternalParticipantCaps: an external participant joins at most
// --max-sessions-per-participant sessions (422 too_many_sessions, checked
// before anything is delivered); one API key registers at most
// --max-externals-per-credential of them, so another key still finds room
// under the node's --max-external-participants.
func TestExternalParticipantCaps(t *testing.T) {
	fake := newCFGateway(t, nil)
	n := startNode(t, Config{APIKeys: []string{"key-a", "key-b"}, AllowGateways: []string{fake.URL()},
		MaxSessionsPerParticipant: 2, MaxExternalsPerCredential: 2, MaxExternalParticipants: 3})
	keyA, keyB := bearerHeader("key-a"), bearerHeader("key-b")
	bob, _ := attach(t, n, "bob", sessionQuery("s1", "s2"), http.Header{"Authorization": {"Bearer key-a"}})
	carol, _ := attach(t, n, "carol", sessionQuery("s3"), http.Header{"Authorization": {"Bearer key-a"}})

	for i, s := range []string{"s1", "s2"} {
		require.Equal(t, http.StatusOK, externalSubmit(t, n, "far", s, fake.URL(), keyA).Status)
		apiNextEvent(t, bob, uint64(i+1))
	}
	apiRequireError(t, externalSubmit(t, n, "far", "s3", fake.URL(), keyA), http.StatusUnprocessableEntity, "too_many_sessions", "session_id")
	submit2 := postJSON(t, n.URL()+apiEventsPath, event("bob", "s3", "after"), keyA)
	require.Equal(t, http.StatusOK, submit2.Status)
	_, inner := apiNextEvent(t, carol, 1) // the refused submit delivered nothing
	assert.Equal(t, "after", inner["message"])
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "far", "s1", fake.URL(), keyA).Status, "a session it has is fine")
	apiNextEvent(t, bob, 3)

	require.Equal(t, http.StatusOK, externalSubmit(t, n, "far-2", "s1", fake.URL(), keyA).Status)
	apiNextEvent(t, bob, 4)
	apiRequireError(t, externalSubmit(t, n, "far-3", "s1", fake.URL(), keyA),
		http.StatusServiceUnavailable, "too_many_external_participants", "sender_gateway_url")
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "far-3", "s1", fake.URL(), keyB).Status, "another key has room")
	apiNextEvent(t, bob, 5)
	apiRequireError(t, externalSubmit(t, n, "far-4", "s1", fake.URL(), keyB),
		http.StatusServiceUnavailable, "too_many_external_participants", "sender_gateway_url")
	r := apiPut(t, n, "s2", "far-4", []byte(`{"gateway_url":`+apiStr(fake.URL())+`}`), keyB)
	apiRequireError(t, r, http.StatusServiceUnavailable, "too_many_external_participants", "gateway_url")
	assert.Equal(t, float64(3), metricValue(t, n, "switchyard_external_participants"))
}

// testClock is the time plus an offset the test advances.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// startNodeWithClock is startNode with the gateway's clock replaced before
// the node starts (so before any goroutine of it reads the clock).
func startNodeWithClock(t testing.TB, cfg Config, clock *testClock) *Node {
	t.Helper()
	cfg.Listen, cfg.Logger = "127.0.0.1:0", testLogger()
	n, err := New(cfg)
	require.NoError(t, err)
	n.gw.SetClock(clock.now)
	testkit.Start(t, n)
	return n
}

// TestExternalParticipantsExpireWhenIdle: an external participant that
// neither submits nor is PUT again for --external-ttl is dropped, which
// frees its place under the caps; one refreshed meanwhile stays. The sweep
// is driven by the test's clock (the node's own sweeper runs once a minute
// with an hour's TTL: not within the test).
func TestExternalParticipantsExpireWhenIdle(t *testing.T) {
	fake := newCFGateway(t, nil)
	clock := &testClock{}
	n := startNodeWithClock(t, Config{AllowGateways: []string{fake.URL()}, MaxExternalParticipants: 2, ExternalTTL: time.Hour}, clock)
	attach(t, n, "bob", sessionQuery("s1"), nil)
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "idle", "s1", fake.URL(), nil).Status)
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "busy", "s1", fake.URL(), nil).Status)
	apiRequireError(t, externalSubmit(t, n, "newcomer", "s1", fake.URL(), nil),
		http.StatusServiceUnavailable, "too_many_external_participants", "sender_gateway_url")

	clock.advance(50 * time.Minute)
	n.gw.ExpireExternals(clock.now())
	view, _ := cfSession(n.URL(), "s1", nil)
	require.Contains(t, view, "idle", "not idle for the TTL yet")
	require.Equal(t, http.StatusOK, apiPut(t, n, "s1", "busy", []byte(`{"gateway_url":`+apiStr(fake.URL())+`}`), nil).Status)

	clock.advance(20 * time.Minute)
	n.gw.ExpireExternals(clock.now())
	view, _ = cfSession(n.URL(), "s1", nil)
	assert.NotContains(t, view, "idle", "idle past the TTL: dropped")
	assert.Contains(t, view, "busy", "refreshed by its PUT")
	assert.Equal(t, float64(1), metricValue(t, n, `switchyard_external_participants_dropped_total{reason="expired"}`))
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "newcomer", "s1", fake.URL(), nil).Status, "the expired one's place is free")
}

// TestExternalParticipantsSweeperRuns: with a short --external-ttl the
// node's own sweeper drops an idle external participant.
func TestExternalParticipantsSweeperRuns(t *testing.T) {
	fake := newCFGateway(t, nil)
	n := startNode(t, Config{AllowGateways: []string{fake.URL()}, ExternalTTL: 200 * time.Millisecond})
	attach(t, n, "bob", sessionQuery("s1"), nil)
	require.Equal(t, http.StatusOK, externalSubmit(t, n, "idle", "s1", fake.URL(), nil).Status)
	require.Eventually(t, func() bool {
		view, _ := cfSession(n.URL(), "s1", nil)
		return view["idle"] == nil && metricValue(t, n, `switchyard_external_participants_dropped_total{reason="expired"}`) == 1
	}, 20*time.Second, 20*time.Millisecond, "the idle external participant was never dropped")
}

// TestGatewayURLOfAClusterMemberIsRefused: a sender_gateway_url or
// gateway_url on a cluster member's URL (however it is spelled) would only
// ever fail (a member answers an external delivery 401), so it is refused
// 422 naming the field, and nobody is registered or delivered to.
func TestGatewayURLOfAClusterMemberIsRefused(t *testing.T) {
	nodes := cfCluster(t, 2, Config{}, nil, nil)
	n1, n2 := nodes[0], nodes[1]
	bob, _ := attach(t, n1, "bob", sessionQuery("s1"), nil)
	hostPort := strings.TrimPrefix(n2.URL(), "http://")
	for _, u := range []string{n2.URL(), n2.URL() + "/", "HTTP://" + hostPort + "/", "http://" + strings.ToUpper(hostPort) + "/v1", n1.URL() + "/v1", n1.URL()} {
		r := externalSubmit(t, n1, "mallory", "s1", u, nil)
		apiRequireError(t, r, http.StatusUnprocessableEntity, "gateway_url_not_allowed", "sender_gateway_url")
		assert.Contains(t, r.Body["detail"], "node of this cluster", "%s", r.Raw)
		r = apiPut(t, n1, "s1", "mallory", []byte(`{"gateway_url":`+apiStr(u)+`}`), nil)
		apiRequireError(t, r, http.StatusUnprocessableEntity, "gateway_url_not_allowed", "gateway_url")
	}
	view, _ := cfSession(n1.URL(), "s1", nil)
	assert.NotContains(t, view, "mallory")
	r := submit(t, n1, event("alice", "s1", "after"))
	assert.Equal(t, float64(1), r.Body["recipients"], "%s", r.Raw)
	_, inner := apiNextEvent(t, bob, 1) // nothing of mallory's reached bob
	assert.Equal(t, "after", inner["message"])
}

// TestFailingExternalParticipantIsDropped: an external participant whose
// gateway refuses --external-failure-limit deliveries in a row is dropped
// from its sessions (metric counted), so the next submit to the session
// answers 200 instead of 502; registering again brings it back.
func TestFailingExternalParticipantIsDropped(t *testing.T) {
	broken := newCFGateway(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // what a cluster member answers
	})
	n := startNode(t, Config{AllowGateways: []string{broken.URL()}}) // --external-failure-limit: 5 by default
	const limit = 5
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	require.Equal(t, http.StatusOK, apiPut(t, n, "s1", "far", []byte(`{"gateway_url":`+apiStr(broken.URL())+`}`), nil).Status)

	for i := range limit {
		r := postJSON(t, n.URL()+apiEventsPath, event("alice", "s1", "to far and bob"), nil)
		apiRequireError(t, r, http.StatusBadGateway, "recipients_unreachable", "")
		assert.Equal(t, []any{"far"}, r.Body["failed"], "%s", r.Raw)
		apiNextEvent(t, bob, uint64(i+1))
	}
	r := submit(t, n, event("alice", "s1", "far is gone"))
	assert.Equal(t, float64(1), r.Body["recipients"], "%s", r.Raw)
	apiNextEvent(t, bob, limit+1)
	assert.Len(t, broken.requests(), limit, "nothing more was sent to the failing gateway")
	assert.Equal(t, float64(1), metricValue(t, n, `switchyard_external_participants_dropped_total{reason="failing"}`))
	view, _ := cfSession(n.URL(), "s1", nil)
	assert.NotContains(t, view, "far")

	// The sender comes back by registering again.
	require.Equal(t, http.StatusOK, apiPut(t, n, "s1", "far", []byte(`{"gateway_url":`+apiStr(broken.URL())+`}`), nil).Status)
	r = postJSON(t, n.URL()+apiEventsPath, event("alice", "s1", "to far again"), nil)
	assert.Equal(t, http.StatusBadGateway, r.Status, "%s", r.Raw)
}

// TestFailingExternalParticipantOfAnotherNodeIsSkipped: the node that
// registered an external participant rarely delivers to it; the others do.
// One that failed --external-failure-limit deliveries in a row from a node
// is not routed to from that node any more (for --external-retry-after), so
// submits there answer 200 instead of 502.
func TestFailingExternalParticipantOfAnotherNodeIsSkipped(t *testing.T) {
	broken := newCFGateway(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
	nodes := cfCluster(t, 2, Config{AllowGateways: []string{broken.URL()}}, nil, nil)
	n1, n2 := nodes[0], nodes[1]
	const limit = 5 // the default --external-failure-limit
	bob, _ := attach(t, n2, "bob", sessionQuery("s1"), nil)
	require.Equal(t, http.StatusOK, apiPut(t, n1, "s1", "far", []byte(`{"gateway_url":`+apiStr(broken.URL())+`}`), nil).Status)
	require.Eventually(t, func() bool {
		view, _ := cfSession(n2.URL(), "s1", nil)
		return len(view["far"]) == 1
	}, 10*time.Second, 10*time.Millisecond, "node 2 never learned of far")

	for i := range limit {
		r := postJSON(t, n2.URL()+apiEventsPath, event("alice", "s1", "to far and bob"), nil)
		apiRequireError(t, r, http.StatusBadGateway, "recipients_unreachable", "")
		apiNextEvent(t, bob, uint64(i+1))
	}
	r := submit(t, n2, event("alice", "s1", "far is skipped"))
	assert.Equal(t, float64(1), r.Body["recipients"], "%s", r.Raw)
	apiNextEvent(t, bob, limit+1)
	assert.Len(t, broken.requests(), limit)
	assert.Equal(t, float64(1), metricValue(t, n2, `switchyard_external_participants_dropped_total{reason="suspended"}`))
	view, _ := cfSession(n1.URL(), "s1", nil)
	assert.Contains(t, view, "far", "its owner keeps the registration")
}

// TestExternalSenderOfAPartly502SubmitIsRegistered: a submit answered 502
// registers its sender when some recipients got the event (they may answer
// at once), and not when every recipient failed.
func TestExternalSenderOfAPartly502SubmitIsRegistered(t *testing.T) {
	fake := newCFGateway(t, nil)
	broken := newCFGateway(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	n := startNode(t, Config{AllowGateways: []string{fake.URL(), broken.URL()}})
	bob, _ := attach(t, n, "bob", sessionQuery("partly"), nil)
	for _, s := range []string{"partly", "all-fail"} {
		require.Equal(t, http.StatusOK, apiPut(t, n, s, "far", []byte(`{"gateway_url":`+apiStr(broken.URL())+`}`), nil).Status)
	}

	r := externalSubmit(t, n, "outsider", "partly", fake.URL(), nil)
	apiRequireError(t, r, http.StatusBadGateway, "recipients_unreachable", "")
	apiNextEvent(t, bob, 1)
	view, _ := cfSession(n.URL(), "partly", nil)
	assert.Contains(t, view, "outsider", "bob got it: the sender is registered")

	r = externalSubmit(t, n, "stranger", "all-fail", fake.URL(), nil)
	apiRequireError(t, r, http.StatusBadGateway, "recipients_unreachable", "")
	view, _ = cfSession(n.URL(), "all-fail", nil)
	assert.NotContains(t, view, "stranger", "nobody got it: nothing registered")
}
