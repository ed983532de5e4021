package sidecar

// Faults between nodes of an in-process cluster (issue 3, "Bad input and
// faults"): unreachable, failing and slow peers, a participant that leaves
// between lookup and forward, a node that leaves or dies, the forward loop
// guard, external gateways, peer authentication, gossip garbage and
// directory convergence under churn. Everything runs on 127.0.0.1 with real
// nodes, HTTP, memberlist and WebSockets; faults are injected by a loopback
// reverse proxy in front of a node (its advertised URL) and, for a node
// that dies without leaving, by a memberlist transport that goes silent
// (faultProxy and faultTransport, in faults_helpers_test.go).

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
)

// ---------------------------------------------------------------------------
// Cluster and request helpers.

// cfCluster starts size nodes as startCluster does (fast gossip timers,
// every node joining the first, waiting until all see all), with base as
// every node's config, and two additions: proxies[i], when set, fronts node
// i and becomes its AdvertiseURL; tweak, when set, adjusts each node's
// config (c.Gossip is filled in) before it starts.
//
// At the end of the test (after the WebSocket clients are closed, before
// startNode's own cleanups, which then find the nodes stopped) the nodes
// are shut down one at a time, last first, each once the others have seen
// the previous one go: a draining node hands its participants to live
// successors, and one that just left would make it wait (see
// TestClusterFaultDrainSkipsADeadSuccessor).
func cfCluster(t testing.TB, size int, base Config, proxies map[int]*faultProxy, tweak func(i int, c *Config)) []*Node {
	t.Helper()
	var nodes []*Node
	var seed string
	for i := range size {
		gc := membership.GossipConfig{Bind: "127.0.0.1:0", Memberlist: fastGossip, RejoinInterval: 500 * time.Millisecond}
		if seed != "" {
			gc.Join = []string{seed}
		}
		c := base
		c.NodeName, c.Gossip = fmt.Sprintf("node-%d", i+1), &gc
		px := proxies[i]
		if px != nil {
			c.AdvertiseURL = px.URL()
		}
		if tweak != nil {
			tweak(i, &c)
		}
		n := startNode(t, c)
		if px != nil {
			px.setTarget(n)
		}
		if seed == "" {
			seed = n.GossipAddr()
		}
		nodes = append(nodes, n)
	}
	waitMembers(t, nodes, size)
	t.Cleanup(func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			gone := nodes[i]
			stop := cfDropIdle(nodes[:i], proxies)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			assert.NoError(t, gone.Shutdown(ctx), "%s's shutdown", gone.Name())
			cancel()
			stop()
			assert.Eventually(t, func() bool {
				for _, n := range nodes[:i] {
					if n.draining.Load() {
						continue // shut down by the test already: its view is frozen
					}
					for _, m := range n.cluster.Members() {
						if m.Name == gone.Name() && m.State != membership.StateLeft && m.State != membership.StateDead {
							return false
						}
					}
				}
				return true
			}, 10*time.Second, 5*time.Millisecond, "the others never saw %s go", gone.Name())
		}
	})
	return nodes
}

// cfSession reads GET /v1/gateway/sessions/{id} from base: participant id →
// its view (nil and the status when the answer is not 200).
func cfSession(base, session string, header map[string]string) (map[string][]map[string]any, int) {
	a := sendBounded(http.MethodGet, base+"/v1/gateway/sessions/"+url.PathEscape(session), nil, header, 5*time.Second)
	if a.err != nil || a.status != http.StatusOK {
		return nil, a.status
	}
	out := map[string][]map[string]any{}
	parts, _ := a.body["participants"].([]any)
	for _, p := range parts {
		if m, ok := p.(map[string]any); ok {
			id, _ := m["participant_id"].(string)
			out[id] = append(out[id], m)
		}
	}
	return out, a.status
}

// cfDelivery is a delivery body for one recipient of a valid event.
func cfDelivery(recipient, session, message string) map[string]any {
	return map[string]any{"recipient_id": recipient, "session_id": session, "event": event("x", session, message)}
}

// cfDropIdle makes others, the proxies and the test's HTTP client drop
// their idle pooled connections every 20 ms until stop is called. A node
// that shuts down meanwhile is spared a 5 s wait: net/http's
// Server.Shutdown waits that long for a connection that has not sent a
// request yet, which a peer's pool may hold (dialed, then not needed).
func cfDropIdle(others []*Node, proxies map[int]*faultProxy) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range others {
				n.peers.close()
			}
			for _, px := range proxies {
				px.tr.CloseIdleConnections()
			}
			http.DefaultClient.CloseIdleConnections()
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// cfShutdown shuts n down in the background (its clients must read for
// their WebSockets to close) while the others drop idle connections (see
// cfDropIdle), and returns the result.
func cfShutdown(n *Node, others ...*Node) <-chan error {
	res := make(chan error, 1)
	go func() {
		stop := cfDropIdle(others, nil)
		defer stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res <- n.Shutdown(ctx)
	}()
	return res
}

// ---------------------------------------------------------------------------
// 1. Unreachable peer.

// TestClusterFaultUnreachablePeerAnswers502 breaks the peer hop to node 3
// three ways (it answers 500, it drops the connection, it is down): a
// submit to a session with participants on node 2 and node 3 answers 502
// recipients_unreachable naming exactly node 3's participants; node 2's
// participant got the event; once the peer is back a retry with the same
// event_id reaches those that missed it.
func TestClusterFaultUnreachablePeerAnswers502(t *testing.T) {
	px := newFaultProxy(t)
	nodes := cfCluster(t, 3, Config{}, map[int]*faultProxy{2: px}, func(_ int, c *Config) {
		c.ForwardTimeout = 600 * time.Millisecond
		c.PeerAttemptTimeout = 200 * time.Millisecond
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	faults := []struct {
		name         string
		breakIt, fix func(t *testing.T)
	}{
		{"peer answers 500", func(*testing.T) { px.setMode(deliveriesFail) }, func(*testing.T) { px.setMode(deliveriesPass) }},
		{"peer drops the connection", func(*testing.T) { px.setMode(deliveriesReset) }, func(*testing.T) { px.setMode(deliveriesPass) }},
		{"peer is down", func(*testing.T) { px.down() }, func(t *testing.T) { px.up(t) }},
	}
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			session := fmt.Sprint("s-", i)
			bob, _ := attach(t, n2, fmt.Sprint("bob-", i), sessionQuery(session), nil)
			alice, _ := attach(t, n3, fmt.Sprint("alice-", i), sessionQuery(session), nil)
			carol, _ := attach(t, n3, fmt.Sprint("carol-", i), sessionQuery(session), nil)

			before := px.deliveries.Load()
			f.breakIt(t)
			a := sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", session, "first try"), nil, 10*time.Second)
			require.NoError(t, a.err, "the submit did not answer")
			apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
			id, _ := a.body["event_id"].(string)
			require.NotEmpty(t, id, "a 502 names the event: %s", a.raw)
			assert.Equal(t, []any{fmt.Sprint("alice-", i), fmt.Sprint("carol-", i)}, a.body["failed"],
				"failed lists exactly the broken peer's participants: %s", a.raw)
			frame, inner := apiNextEvent(t, bob, 1)
			assert.Equal(t, id, frame["event_id"], "the healthy peer's participant got the event")
			assert.Equal(t, "first try", inner["message"])
			if f.name == "peer answers 500" {
				assert.GreaterOrEqual(t, px.deliveries.Load()-before, int64(2), "a 5xx answer is retried within the deadline")
			}

			f.fix(t)
			ev := event("x", session, "first try")
			ev["event_id"] = id
			r := postJSON(t, n1.URL()+apiEventsPath, ev, nil)
			require.Equal(t, http.StatusOK, r.Status, "the retry answered %s", r.Raw)
			assert.Equal(t, id, r.Body["event_id"])
			for _, c := range []*client{alice, carol} {
				frame, inner := apiNextEvent(t, c, 1)
				assert.Equal(t, id, frame["event_id"], "the retry reached a participant that missed the event")
				assert.Equal(t, "first try", inner["message"])
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 2. Peer answering slowly.

// TestClusterFaultSlowPeerAnswers502WithinTheDeadline: a peer that never
// answers makes the submit answer 502 once the forward deadline passes
// (every attempt bounded, retried meanwhile), never hang; the caller's
// abandoned requests end; deliveries forwarded to it answer 502 too.
func TestClusterFaultSlowPeerAnswers502WithinTheDeadline(t *testing.T) {
	px := newFaultProxy(t)
	nodes := cfCluster(t, 3, Config{}, map[int]*faultProxy{2: px}, func(_ int, c *Config) {
		c.ForwardTimeout = 500 * time.Millisecond
		c.PeerAttemptTimeout = 200 * time.Millisecond
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	bob, _ := attach(t, n2, "bob", sessionQuery("s"), nil)
	alice, _ := attach(t, n3, "alice", sessionQuery("s"), nil)

	px.setMode(deliveriesHang)
	a := sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", "s", "slow"), nil, 10*time.Second)
	require.NoError(t, a.err, "the submit hung on a slow peer")
	assert.Less(t, a.elapsed, 5*time.Second, "guard against hanging")
	apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
	assert.Equal(t, []any{"alice"}, a.body["failed"], "%s", a.raw)
	require.NotEmpty(t, a.body["event_id"], "%s", a.raw)
	frame, _ := apiNextEvent(t, bob, 1)
	assert.Equal(t, a.body["event_id"], frame["event_id"])
	assert.GreaterOrEqual(t, px.deliveries.Load(), int64(2), "an attempt that times out is retried within the deadline")
	require.Eventually(t, func() bool { return px.inflight.Load() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the node never gave up the requests it abandoned")

	// A delivery for alice posted to node 1 is forwarded to the slow peer
	// and answers 502 the same way.
	d := sendBounded(http.MethodPost, n1.URL()+apiDeliveriesPath, cfDelivery("alice", "s", "slow delivery"), nil, 10*time.Second)
	require.NoError(t, d.err, "the delivery hung on a slow peer")
	apiRequireError(t, d.api(), http.StatusBadGateway, "recipients_unreachable", "")
	assert.Equal(t, []any{"alice"}, d.body["failed"], "%s", d.raw)

	// The peer recovers: alice gets what is sent next, and nothing of what
	// was abandoned.
	px.setMode(deliveriesPass)
	submit(t, n1, event("x", "s", "fast again"))
	_, inner := apiNextEvent(t, alice, 1)
	assert.Equal(t, "fast again", inner["message"])
}

// ---------------------------------------------------------------------------
// 3. A peer that lost the participant between lookup and forward, and a
// peer that leaves while submits are in flight.

// TestClusterFaultParticipantGoneBetweenLookupAndForward holds node 1's
// forward to node 3 at the proxy (node 1 has looked the participant up),
// lets the participant detach and node 3 forget it, then lets the forward
// through: node 3 answers 404 and so does the submit. Later submits answer
// 404 too.
func TestClusterFaultParticipantGoneBetweenLookupAndForward(t *testing.T) {
	px := newFaultProxy(t)
	nodes := cfCluster(t, 3, Config{}, map[int]*faultProxy{2: px}, func(i int, c *Config) {
		c.ForwardTimeout = 8 * time.Second
		c.PeerAttemptTimeout = 6 * time.Second // the held attempt is not cut short
		if i == 2 {
			c.OfflineTTL = 50 * time.Millisecond // the sweeper (every second) forgets it soon
		}
	})
	n1, n3 := nodes[0], nodes[2]
	ghost, _ := attach(t, n3, "ghost", sessionQuery("s3"), nil)

	px.setMode(deliveriesGate)
	done := make(chan boundedAnswer, 1)
	go func() {
		done <- sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", "s3", "too late"), nil, 20*time.Second)
	}()
	select {
	case <-px.arrived:
	case <-time.After(10 * time.Second):
		px.releaseGate()
		<-done
		t.Fatal("node 1 never forwarded the event to node 3")
	}
	require.NoError(t, ghost.Conn.Close(websocket.StatusNormalClosure, "bye"))
	require.Eventually(t, func() bool { return n3.hub.Lookup("ghost") == nil }, 10*time.Second, 10*time.Millisecond,
		"node 3 never forgot its detached participant")
	px.releaseGate()
	var a boundedAnswer
	select {
	case a = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the submit never answered")
	}
	require.NoError(t, a.err)
	apiRequireError(t, a.api(), http.StatusNotFound, wire.CodeRecipientNotFound, "")

	require.Eventually(t, func() bool {
		r := sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", "s3", "later"), nil, 10*time.Second)
		return r.err == nil && r.status == http.StatusNotFound && r.body["code"] == wire.CodeRecipientNotFound
	}, 10*time.Second, 20*time.Millisecond, "node 1 kept routing to a participant node 3 forgot")
}

// TestClusterFaultSubmitsWhilePeerLeavesNeverHang submits continuously on
// nodes 1 and 2 to participants of node 3 while node 3 shuts down: every
// answer comes within a bound and is 200 (still routable, offline), 404 or
// 502 as SPEC says; once the others have noticed, nothing is routed to node
// 3: its participants are gone (404) or handed over to a live node.
func TestClusterFaultSubmitsWhilePeerLeavesNeverHang(t *testing.T) {
	nodes := cfCluster(t, 3, Config{ForwardTimeout: time.Second, PeerAttemptTimeout: 300 * time.Millisecond}, nil, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	leaver1, _ := attach(t, n3, "leaver-1", sessionQuery("s3"), nil)
	leaver2, _ := attach(t, n3, "leaver-2", sessionQuery("s3"), nil)
	submit(t, n1, event("x", "s3", "before"))

	var (
		mu      sync.Mutex
		answers []boundedAnswer
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, n := range []*Node{n1, n2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := sendBounded(http.MethodPost, n.URL()+apiEventsPath, event("x", "s3", fmt.Sprint("during-", i)), nil, 10*time.Second)
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		}()
	}
	shutdown := cfShutdown(n3, n1, n2)
	for _, c := range []*client{leaver1, leaver2} {
		c.CloseStatus() // reads its events until node 3 closes it
	}
	require.NoError(t, <-shutdown)
	noticed := assert.Eventually(t, func() bool {
		for _, n := range []*Node{n1, n2} {
			if dirHomedOn(n, "node-3", "s3") || memberStates(n.URL(), nil)["node-3"] != membership.StateLeft {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the others never noticed that node 3 left")
	close(stop)
	wg.Wait()
	require.True(t, noticed)

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, answers)
	counts := map[int]int{}
	for _, a := range answers {
		require.NoError(t, a.err, "a submit did not answer")
		require.Less(t, a.elapsed, 5*time.Second, "a submit took too long")
		counts[a.status]++
		switch a.status {
		case http.StatusOK:
		case http.StatusNotFound:
			require.Equal(t, wire.CodeRecipientNotFound, a.body["code"], "%s", a.raw)
		case http.StatusBadGateway:
			require.Equal(t, "recipients_unreachable", a.body["code"], "%s", a.raw)
			require.Subset(t, []any{"leaver-1", "leaver-2"}, a.body["failed"], "%s", a.raw)
		default:
			require.Failf(t, "unexpected answer", "%d: %s", a.status, a.raw)
		}
	}
	t.Logf("answers while node 3 left: %v", counts)

	for _, n := range []*Node{n1, n2} {
		cfCheckNotRoutedTo(t, n, "s3", "node-3", "leaver-1", "leaver-2")
	}
}

// cfCheckNotRoutedTo checks on n that nothing is routed to the departed
// node gone any more: no participant of session lives there; a submit to
// the session, and one to each of ids, answers 200 while the session view
// still lists a recipient (handed over to a live node, where it waits
// offline) and 404 once it lists none; never 502.
func cfCheckNotRoutedTo(t *testing.T, n *Node, session, gone string, ids ...string) {
	t.Helper()
	view, _ := cfSession(n.URL(), session, nil)
	for id, vs := range view {
		for _, v := range vs {
			assert.NotEqual(t, gone, v["node"], "%s still lists %s on the departed %s", n.Name(), id, gone)
		}
	}
	check := func(ev map[string]any, listed bool) {
		t.Helper()
		a := sendBounded(http.MethodPost, n.URL()+apiEventsPath, ev, nil, 10*time.Second)
		require.NoError(t, a.err, "a submit did not answer")
		if listed {
			assert.Equal(t, http.StatusOK, a.status, "%s: %s", n.Name(), a.raw)
		} else {
			apiRequireError(t, a.api(), http.StatusNotFound, wire.CodeRecipientNotFound, "")
		}
	}
	check(event("x", session, "after"), len(view) > 0)
	for _, id := range ids {
		ev := event("x", "", "after, direct")
		delete(ev, "session_id")
		ev["recipient_id"] = id
		check(ev, view[id] != nil)
		if view[id] != nil {
			t.Logf("%s: %s was handed over to %v", n.Name(), id, view[id][0]["node"])
		}
	}
}

// ---------------------------------------------------------------------------
// 4. Forward loop guard; a participant on two nodes.

// TestClusterFaultDeliveryForwardsOnceAndHopGuard: a delivery posted to
// node 1 for a participant homed on node 2 is forwarded once (one request,
// hop count 1) and delivered once; with Switchyard-Hops at 2 or more node 1
// does not forward, and reports bob failed (502, so that the sender
// retries: he lives on, a hop further); a local delivery is never refused
// for its hops.
// A participant attached to two nodes at once gets each event on both
// connections, once.
func TestClusterFaultDeliveryForwardsOnceAndHopGuard(t *testing.T) {
	px := newFaultProxy(t)
	nodes := cfCluster(t, 3, Config{}, map[int]*faultProxy{1: px}, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	bob, _ := attach(t, n2, "bob", sessionQuery("s4"), nil)

	deliver := func(n *Node, body any, hops string) boundedAnswer {
		t.Helper()
		var h map[string]string
		if hops != "" {
			h = map[string]string{hopsHeader: hops}
		}
		a := sendBounded(http.MethodPost, n.URL()+apiDeliveriesPath, body, h, 10*time.Second)
		require.NoError(t, a.err)
		return a
	}

	before := px.deliveries.Load()
	a := deliver(n1, cfDelivery("bob", "s4", "via node 1"), "")
	require.Equal(t, http.StatusOK, a.status, "%s", a.raw)
	assert.Equal(t, "ok", a.body["status"])
	seen := px.requests()
	require.Len(t, seen, int(before)+1, "node 1 forwards exactly once")
	last := seen[len(seen)-1]
	assert.Equal(t, "1", last.header.Get(hopsHeader), "the forward carries its hop count")
	assert.Equal(t, []any{"bob"}, last.body["recipient_ids"])
	_, inner := apiNextEvent(t, bob, 1)
	assert.Equal(t, "via node 1", inner["message"])

	for _, hops := range []string{"2", "7"} {
		a = deliver(n1, cfDelivery("bob", "s4", "hops "+hops), hops)
		apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
		assert.Equal(t, []any{"bob"}, a.body["failed"])
	}
	assert.Len(t, px.requests(), int(before)+1, "a delivery at the hop limit is not forwarded")

	a = deliver(n1, cfDelivery("bob", "s4", "second hop"), "1")
	require.Equal(t, http.StatusOK, a.status, "%s", a.raw)
	seen = px.requests()
	require.Len(t, seen, int(before)+2)
	assert.Equal(t, "2", seen[len(seen)-1].header.Get(hopsHeader))
	_, inner = apiNextEvent(t, bob, 2)
	assert.Equal(t, "second hop", inner["message"], "the refused deliveries delivered nothing")

	a = deliver(n2, cfDelivery("bob", "s4", "local at the limit"), "2")
	require.Equal(t, http.StatusOK, a.status, "a local delivery is not refused for its hops: %s", a.raw)
	_, inner = apiNextEvent(t, bob, 3)
	assert.Equal(t, "local at the limit", inner["message"])

	// A batch naming someone unknown: bob gets it, the other is reported.
	a = deliver(n1, map[string]any{"recipient_ids": []string{"bob", "nobody"}, "session_id": "s4",
		"event": event("x", "s4", "batch")}, "")
	require.Equal(t, http.StatusOK, a.status, "%s", a.raw)
	assert.Equal(t, []any{"nobody"}, a.body["not_found"], "%s", a.raw)
	_, inner = apiNextEvent(t, bob, 4)
	assert.Equal(t, "batch", inner["message"])

	// dave is attached to node 1 and node 2 at once.
	dave1, _ := attach(t, n1, "dave", sessionQuery("sd"), nil)
	dave2, _ := attach(t, n2, "dave", sessionQuery("sd"), nil)
	view, status := cfSession(n3.URL(), "sd", nil)
	require.Equal(t, http.StatusOK, status)
	var homes []any
	for _, v := range view["dave"] {
		homes = append(homes, v["node"])
	}
	assert.ElementsMatch(t, []any{"node-1", "node-2"}, homes, "the session view shows both homes")

	direct := event("x", "", "direct")
	delete(direct, "session_id")
	direct["recipient_id"] = "dave"
	steps := []struct {
		on *Node
		ev map[string]any
	}{
		{n3, event("x", "sd", "from node 3")}, // two peers
		{n1, event("x", "sd", "from node 1")}, // local and a peer
		{n3, direct},                          // recipient_id
	}
	for i, s := range steps {
		r := submit(t, s.on, s.ev)
		assert.Equal(t, float64(2), r.Body["recipients"], "step %d: %s", i, r.Raw)
		for _, c := range []*client{dave1, dave2} {
			frame, inner := apiNextEvent(t, c, uint64(i+1)) // consecutive seqs: each connection gets it once
			assert.Equal(t, r.Body["event_id"], frame["event_id"])
			assert.Equal(t, s.ev["message"], inner["message"])
		}
	}
}

// ---------------------------------------------------------------------------
// 5. External gateways.

// deliveriesGateway is a fake external gateway: it records every request and
// answers answer (200 {"status":"ok"} when nil).
type deliveriesGateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []deliveriesGatewayRequest
	answer func(w http.ResponseWriter, r *http.Request)
}

type deliveriesGatewayRequest struct {
	method, path string
	header       http.Header
	raw          []byte
	body         map[string]any
}

func newCFGateway(t testing.TB, answer func(w http.ResponseWriter, r *http.Request)) *deliveriesGateway {
	t.Helper()
	g := &deliveriesGateway{answer: answer}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := deliveriesGatewayRequest{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), raw: raw}
		_ = json.Unmarshal(raw, &rec.body)
		g.mu.Lock()
		g.got = append(g.got, rec)
		g.mu.Unlock()
		if g.answer != nil {
			g.answer(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *deliveriesGateway) URL() string { return g.srv.URL }

func (g *deliveriesGateway) requests() []deliveriesGatewayRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}

// TestClusterFaultGatewayURLNeedsTheAllowList: without --allow-gateway a
// sender_gateway_url or gateway_url is refused with 422
// gateway_url_not_allowed, and nothing is sent to it. (A cluster member's
// own URL is refused too: TestGatewayURLOfAClusterMemberIsRefused.)
func TestClusterFaultGatewayURLNeedsTheAllowList(t *testing.T) {
	fake := newCFGateway(t, nil)
	nodes := cfCluster(t, 2, Config{}, nil, nil)
	n1, n2 := nodes[0], nodes[1]
	attach(t, n2, "bob", sessionQuery("s1"), nil)

	ev := event("remote-agent", "s1", "hi")
	ev["sender_gateway_url"] = fake.URL()
	r := postJSON(t, n1.URL()+apiEventsPath, ev, nil)
	apiRequireError(t, r, http.StatusUnprocessableEntity, "gateway_url_not_allowed", "sender_gateway_url")

	r = apiPut(t, n1, "s1", "far", []byte(`{"gateway_url":`+apiStr(fake.URL())+`}`), nil)
	apiRequireError(t, r, http.StatusUnprocessableEntity, "gateway_url_not_allowed", "gateway_url")

	// Neither registered anyone: a submit to s1 reaches bob alone.
	r = submit(t, n1, event("x", "s1", "only bob"))
	assert.Equal(t, float64(1), r.Body["recipients"], "%s", r.Raw)
	assert.Empty(t, fake.requests(), "nothing is sent to a gateway that is not allowed")
}

// TestClusterFaultExternalGatewaysGetSpecShapedDeliveries: a sender with a
// sender_gateway_url (on node 1) and a participant PUT with a gateway_url
// (on node 2) become external participants known cluster-wide: a reply
// submitted on node 3 reaches the fake gateway as one spec-shaped delivery
// per recipient, with the external key as bearer token.
func TestClusterFaultExternalGatewaysGetSpecShapedDeliveries(t *testing.T) {
	fake := newCFGateway(t, nil)
	nodes := cfCluster(t, 3, Config{AllowGateways: []string{fake.URL()}, ExternalKey: "ext-secret"}, nil, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	bob, _ := attach(t, n2, "bob", sessionQuery("s1"), nil)

	ev := event("remote-agent", "s1", "hello from outside")
	ev["sender_gateway_url"] = fake.URL()
	r := submit(t, n1, ev)
	assert.Equal(t, float64(1), r.Body["recipients"], "%s", r.Raw)
	_, inner := apiNextEvent(t, bob, 1)
	assert.Equal(t, "hello from outside", inner["message"])
	assert.Equal(t, fake.URL(), inner["sender_gateway_url"])
	assert.Empty(t, fake.requests(), "the sender does not get its own event")

	r = apiPut(t, n2, "s1", "remote-2", []byte(`{"gateway_url":`+apiStr(fake.URL())+`}`), nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)

	// Every node's session view shows the external participants with their
	// gateway_url and no node.
	for _, n := range nodes {
		require.Eventually(t, func() bool {
			view, _ := cfSession(n.URL(), "s1", nil)
			return len(view["remote-agent"]) == 1 && len(view["remote-2"]) == 1 && len(view["bob"]) == 1
		}, 5*time.Second, 10*time.Millisecond, "%s never learned the external participants", n.Name())
		view, _ := cfSession(n.URL(), "s1", nil)
		for _, id := range []string{"remote-agent", "remote-2"} {
			v := view[id][0]
			assert.Equal(t, fake.URL(), v["gateway_url"], "%s on %s", id, n.Name())
			assert.NotContains(t, v, "node", "%s on %s: an external participant has no node", id, n.Name())
		}
		assert.Equal(t, "node-2", view["bob"][0]["node"])
		assert.NotContains(t, view["bob"][0], "gateway_url")
	}

	reply := event("bob", "s1", "reply")
	reply["x_unknown_field"] = "not forwarded"
	r = submit(t, n3, reply)
	assert.Equal(t, float64(2), r.Body["recipients"], "%s", r.Raw)
	got := fake.requests()
	require.Len(t, got, 2, "one request per external recipient")
	var recipients []string
	for _, g := range got {
		assert.Equal(t, http.MethodPost, g.method)
		assert.Equal(t, "/v1/gateway/deliveries", g.path)
		assert.Equal(t, "Bearer ext-secret", g.header.Get("Authorization"))
		assert.True(t, strings.HasPrefix(g.header.Get("Content-Type"), "application/json"))
		assert.Empty(t, g.header.Get(hopsHeader), "no internal header leaks to a gateway")
		var keys []string
		for k := range g.body {
			keys = append(keys, k)
		}
		assert.ElementsMatch(t, []string{"recipient_id", "session_id", "recipient_gateway_url", "event"}, keys, "%s", g.raw)
		id, _ := g.body["recipient_id"].(string)
		recipients = append(recipients, id)
		assert.Equal(t, "s1", g.body["session_id"])
		assert.Equal(t, fake.URL(), g.body["recipient_gateway_url"])
		e, ok := g.body["event"].(map[string]any)
		require.True(t, ok, "the event is an object: %s", g.raw)
		assert.Equal(t, "bob", e["sender_id"])
		assert.Equal(t, "ai", e["sender_type"])
		assert.Equal(t, "message", e["event_type"])
		assert.Equal(t, "reply", e["message"])
		assert.Equal(t, "s1", e["session_id"])
		assert.NotContains(t, e, "x_unknown_field", "unknown fields are not forwarded")
	}
	assert.ElementsMatch(t, []string{"remote-agent", "remote-2"}, recipients)

	// Bad gateway URLs.
	for _, u := range []string{"http://user:pw@" + strings.TrimPrefix(fake.URL(), "http://"), "http://user@" + strings.TrimPrefix(fake.URL(), "http://")} {
		ev := event("remote-3", "s1", "creds")
		ev["sender_gateway_url"] = u
		apiRequireError(t, postJSON(t, n1.URL()+apiEventsPath, ev, nil), http.StatusUnprocessableEntity, "invalid_url", "sender_gateway_url")
		apiRequireError(t, apiPut(t, n1, "s1", "remote-3", []byte(`{"gateway_url":`+apiStr(u)+`}`), nil),
			http.StatusUnprocessableEntity, "invalid_url", "gateway_url")
	}
	apiRequireError(t, apiPut(t, n1, "s1", "remote-3", []byte(`{"gateway_url":"http://127.0.0.2:1"}`), nil),
		http.StatusUnprocessableEntity, "gateway_url_not_allowed", "gateway_url")
	view, _ := cfSession(n1.URL(), "s1", nil)
	assert.NotContains(t, view, "remote-3", "a refused gateway_url registers nobody")
}

// TestClusterFaultExternalGatewayRedirectIsNotFollowed: a gateway that
// answers a redirect has not taken the event: the submit answers 502 and
// the redirect's target hears nothing.
func TestClusterFaultExternalGatewayRedirectIsNotFollowed(t *testing.T) {
	target := newCFGateway(t, nil)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			redirector := newCFGateway(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL()+r.URL.Path, code)
			})
			n := startNode(t, Config{AllowGateways: []string{redirector.URL(), target.URL()}})
			r := apiPut(t, n, "s-redir", "far", []byte(`{"gateway_url":`+apiStr(redirector.URL())+`}`), nil)
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
			a := sendBounded(http.MethodPost, n.URL()+apiEventsPath, event("x", "s-redir", "redirected"), nil, 10*time.Second)
			require.NoError(t, a.err)
			apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
			assert.Equal(t, []any{"far"}, a.body["failed"], "%s", a.raw)
			assert.NotEmpty(t, redirector.requests(), "the gateway was called")
			assert.Empty(t, target.requests(), "the redirect was followed")
		})
	}
}

// ---------------------------------------------------------------------------
// 6. Peer authentication.

// TestClusterFaultPeersAuthenticateWithTheClusterKey: with API keys on, the
// peer hop carries the cluster key (the first API key by default) and
// works; a delivery without a key, or with a wrong one, is 401 and
// delivers nothing; the cluster key never reaches an external gateway. A
// node whose cluster key its peer does not accept gets 502 for the peer's
// participants rather than a silent loss.
func TestClusterFaultPeersAuthenticateWithTheClusterKey(t *testing.T) {
	t.Run("matching keys", func(t *testing.T) {
		fake := newCFGateway(t, nil)
		px := newFaultProxy(t)
		nodes := cfCluster(t, 2, Config{}, map[int]*faultProxy{1: px}, func(_ int, c *Config) {
			c.APIKeys = []string{"k1"}
			c.AllowGateways = []string{fake.URL()}
		})
		n1, n2 := nodes[0], nodes[1]
		k1 := bearerHeader("k1")
		bob, _ := attach(t, n2, "bob", sessionQuery("s6"), http.Header{"Authorization": {"Bearer k1"}})

		r := postJSON(t, n1.URL()+apiEventsPath, event("x", "s6", "across"), k1)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		_, inner := apiNextEvent(t, bob, 1)
		assert.Equal(t, "across", inner["message"])
		seen := px.requests()
		require.NotEmpty(t, seen)
		assert.Equal(t, "Bearer k1", seen[len(seen)-1].header.Get("Authorization"), "the peer hop carries the cluster key")

		for _, base := range []string{n2.URL(), directURL(n2)} {
			for _, h := range []map[string]string{nil, bearerHeader("wrong")} {
				r = postJSON(t, base+apiDeliveriesPath, cfDelivery("bob", "s6", "forged"), h)
				apiRequireError(t, r, http.StatusUnauthorized, "unauthorized", "")
			}
		}
		r = postJSON(t, n2.URL()+apiDeliveriesPath, cfDelivery("bob", "s6", "with the key"), k1)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		_, inner = apiNextEvent(t, bob, 2)
		assert.Equal(t, "with the key", inner["message"], "the refused deliveries delivered nothing")

		r = apiPut(t, n1, "s6", "far", []byte(`{"gateway_url":`+apiStr(fake.URL())+`}`), k1)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		r = postJSON(t, n1.URL()+apiEventsPath, event("x", "s6", "to the outside"), k1)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		got := fake.requests()
		require.Len(t, got, 1)
		assert.Empty(t, got[0].header.Get("Authorization"), "without --external-key no credential goes to a gateway")
	})

	t.Run("cluster key not accepted by the peer", func(t *testing.T) {
		nodes := cfCluster(t, 2, Config{}, nil, func(i int, c *Config) {
			c.APIKeys = []string{"k1"}
			if i == 0 {
				c.ClusterKey = "not-k1"
			}
		})
		n1, n2 := nodes[0], nodes[1]
		attach(t, n2, "bob", sessionQuery("s6"), http.Header{"Authorization": {"Bearer k1"}})
		// Node 2 refuses node 1's lookups (and node 1 node 2's pushes): node
		// 1 cannot tell where the session's members are, and says so as it
		// does for an unreachable peer.
		a := sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", "s6", "refused"), bearerHeader("k1"), 10*time.Second)
		require.NoError(t, a.err)
		apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
		direct := event("x", "s6", "refused")
		delete(direct, "session_id")
		direct["recipient_id"] = "bob"
		a = sendBounded(http.MethodPost, n1.URL()+apiEventsPath, direct, bearerHeader("k1"), 10*time.Second)
		require.NoError(t, a.err)
		apiRequireError(t, a.api(), http.StatusBadGateway, "recipients_unreachable", "")
		assert.Equal(t, []any{"bob"}, a.body["failed"], "%s", a.raw)
	})
}

// ---------------------------------------------------------------------------
// 7. Node death.

// TestClusterFaultGracefulLeaveDropsRoutesAtOnce: a node that shuts down
// closes its WebSockets with 1001 and leaves; the others list it as left
// and drop its entries right away: its participants are no longer routed
// to it (they are gone, or were handed over to a live node).
func TestClusterFaultGracefulLeaveDropsRoutesAtOnce(t *testing.T) {
	nodes := cfCluster(t, 3, Config{}, nil, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	attach(t, n1, "p1", sessionQuery("s7"), nil)
	attach(t, n2, "p2", sessionQuery("s7"), nil)
	p3a, _ := attach(t, n3, "p3a", sessionQuery("s7"), nil)
	p3b, _ := attach(t, n3, "p3b", sessionQuery("s7"), nil)
	view, _ := cfSession(n1.URL(), "s7", nil)
	require.Len(t, view, 4)

	start := time.Now()
	shutdown := cfShutdown(n3, n1, n2)
	assert.Equal(t, websocket.StatusGoingAway, p3a.CloseStatus())
	assert.Equal(t, websocket.StatusGoingAway, p3b.CloseStatus())
	require.NoError(t, <-shutdown)
	require.Eventually(t, func() bool {
		for _, n := range []*Node{n1, n2} {
			if dirHomedOn(n, "node-3", "s7") || memberStates(n.URL(), nil)["node-3"] != membership.StateLeft {
				return false
			}
		}
		return true
		// "Left", not "dead": what makes this a leave rather than failure
		// detection is the state; the time only bounds it (a loaded CI
		// machine once needed more than 2 s).
	}, 5*time.Second, 5*time.Millisecond, "the others kept node 3's entries after it left")
	t.Logf("routes dropped %v after the shutdown began", time.Since(start).Round(time.Millisecond))
	for _, n := range []*Node{n1, n2} {
		view, _ := cfSession(n.URL(), "s7", nil)
		assert.Equal(t, "node-1", view["p1"][0]["node"])
		assert.Equal(t, "node-2", view["p2"][0]["node"])
		cfCheckNotRoutedTo(t, n, "s7", "node-3", "p3a", "p3b")
	}
}

// TestClusterFaultKilledNodeIsDeclaredDead: node 3 stops answering gossip
// and HTTP at once, without leaving (as after kill -9): the others declare
// it dead, drop its participants and answer 404 for them; in the meantime
// no submit hangs.
func TestClusterFaultKilledNodeIsDeclaredDead(t *testing.T) {
	px := newFaultProxy(t)
	kt := newFaultTransport(t, nil)
	nodes := cfCluster(t, 3, Config{}, map[int]*faultProxy{2: px}, func(i int, c *Config) {
		c.ForwardTimeout = time.Second
		c.PeerAttemptTimeout = 300 * time.Millisecond
		if i == 2 {
			c.Gossip.Bind, c.Gossip.Transport = kt.addr, kt
		}
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	attach(t, n1, "p1", sessionQuery("s7"), nil)
	attach(t, n3, "p3", sessionQuery("s7"), nil)
	view, _ := cfSession(n2.URL(), "s7", nil)
	require.Len(t, view, 2)

	kt.kill()
	px.down()
	killed := time.Now()
	toP3 := event("x", "", "to a dead node")
	delete(toP3, "session_id")
	toP3["recipient_id"] = "p3"
	require.Eventually(t, func() bool {
		for _, n := range []*Node{n1, n2} {
			a := sendBounded(http.MethodPost, n.URL()+apiEventsPath, toP3, nil, 10*time.Second)
			if !assert.NoError(t, a.err, "a submit did not answer") ||
				!assert.Less(t, a.elapsed, 5*time.Second, "a submit took too long") ||
				!assert.Contains(t, []int{http.StatusNotFound, http.StatusBadGateway}, a.status, "%s", a.raw) {
				return false
			}
			if a.status != http.StatusNotFound || memberStates(n.URL(), nil)["node-3"] != membership.StateDead {
				return false
			}
			view, _ := cfSession(n.URL(), "s7", nil)
			if len(view) != 1 || view["p1"] == nil {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the others kept routing to a dead node")
	t.Logf("node 3 declared dead and dropped %v after it was killed", time.Since(killed).Round(time.Millisecond))
	r := submit(t, n2, event("x", "s7", "the living still talk"))
	assert.Equal(t, float64(1), r.Body["recipients"])
}

// TestClusterFaultDrainSkipsADeadSuccessor: node 3 dies without leaving and
// node 2 is shut down right after, while it still counts node 3 alive. A
// draining node hands its participants over to successors; one that cannot
// be reached must cost at most the forward deadline before the next one is
// tried, so node 2 still shuts down cleanly within its drain deadline and
// node 1 ends up with node 2's participants.
func TestClusterFaultDrainSkipsADeadSuccessor(t *testing.T) {
	px := newFaultProxy(t)
	kt := newFaultTransport(t, nil)
	nodes := cfCluster(t, 3, Config{ForwardTimeout: time.Second, PeerAttemptTimeout: 300 * time.Millisecond},
		map[int]*faultProxy{2: px}, func(i int, c *Config) {
			if i == 2 {
				c.Gossip.Bind, c.Gossip.Transport = kt.addr, kt
			}
		})
	n1, n2 := nodes[0], nodes[1]
	var ids []string
	for i := range 8 { // several, so that node 3 comes first in some one's successor order
		id := fmt.Sprint("h-", i)
		ids = append(ids, id)
		r := apiPut(t, n2, "sh", id, nil, nil) // created offline on node 2
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	}
	require.Eventually(t, func() bool {
		view, _ := cfSession(n1.URL(), "sh", nil)
		return len(view) == len(ids)
	}, 5*time.Second, 10*time.Millisecond, "node 1 never learned node 2's participants")

	kt.kill()
	px.down()
	start := time.Now()
	var err error
	select {
	case err = <-cfShutdown(n2, n1):
	case <-time.After(15 * time.Second):
		t.Fatal("node 2's shutdown never returned")
	}
	elapsed := time.Since(start)
	require.NoError(t, err, "node 2's shutdown failed after %v", elapsed)
	assert.Less(t, elapsed, 5*time.Second, "the drain waited on a dead successor")
	view, _ := cfSession(n1.URL(), "sh", nil)
	for _, id := range ids {
		if assert.Len(t, view[id], 1, "%s was not handed over", id) {
			assert.Equal(t, "node-1", view[id][0]["node"])
		}
	}
}

// ---------------------------------------------------------------------------
// 8. Bad gossip messages.

// cfLogs records the messages a node logs at Info and above.
type cfLogs struct {
	mu   sync.Mutex
	msgs []string
}

func (l *cfLogs) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

type cfLogHandler struct{ logs *cfLogs }

func (h cfLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h cfLogHandler) Handle(_ context.Context, r slog.Record) error {
	h.logs.mu.Lock()
	h.logs.msgs = append(h.logs.msgs, r.Message)
	h.logs.mu.Unlock()
	return nil
}
func (h cfLogHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h cfLogHandler) WithGroup(string) slog.Handler      { return h }

// TestClusterFaultGarbageGossipIsDropped: directory messages that do not
// decode, posted over HTTP, are answered 400; garbage UDP packets and TCP
// streams on the gossip port, including user messages that reach our
// decoder, are dropped (and logged); the node keeps working and stays in
// the cluster.
func TestClusterFaultGarbageGossipIsDropped(t *testing.T) {
	logs := &cfLogs{}
	nodes := cfCluster(t, 3, Config{}, nil, func(i int, c *Config) {
		if i == 0 {
			c.Logger = slog.New(cfLogHandler{logs})
		}
	})
	n1, n2 := nodes[0], nodes[1]
	alice, _ := attach(t, n1, "alice", sessionQuery("s8"), nil)
	bob, _ := attach(t, n2, "bob", sessionQuery("s8"), nil)
	before := dirSession(n1, "s8")
	require.Len(t, before, 2)

	for _, body := range []string{
		"garbage", "", "u", "u{not json", `x{"n":"node-2"}`, `u{"n":""}`, `s{"n":"node-2","ep":"soon"}`,
		`u{"n":"node-2","r":[{"p":1}]}`, "\x00\xff\xfe", `[1,2,3]`, `u{"n":"node-2","r":"x"}`,
	} {
		r := postJSON(t, n1.URL()+directoryPath, body, nil)
		apiRequireError(t, r, http.StatusBadRequest, wire.CodeInvalidJSON, "")
	}
	assert.Equal(t, before, dirSession(n1, "s8"), "garbage changed the directory")

	label := append([]byte{244, byte(len("switchyard"))}, "switchyard"...)
	labeled := func(b ...[]byte) []byte { return slices.Concat(append([][]byte{label}, b...)...) }
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1400)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	userMsgs := [][]byte{ // memberlist's userMsg type (8): these reach our NotifyMsg
		labeled([]byte{8}, []byte("garbage{")),
		labeled([]byte{8}, []byte("u{not json")),
		labeled([]byte{8}, []byte(`u{"n":""}`)),
		labeled([]byte{8}),
	}
	other := [][]byte{
		random,
		label,
		{244, 200},
		labeled([]byte{7}, random[:64]), // compound
		labeled([]byte{4}, random[:64]), // alive, not msgpack
		labeled([]byte{12, 1, 2, 3, 4}, random[:64]),   // bad checksum
		labeled([]byte{9}, random[:64]),                // compressed, not really
		labeled([]byte{10}, random[:64]),               // encrypted, no keyring
		labeled([]byte{255}, random[:64]),              // unknown type
		labeled([]byte{7, 255}, []byte{0, 0xff, 0xff}), // compound of huge parts
		labeled([]byte{8}, random[:len(random)-len(label)-1]),
	}
	udp, err := net.Dial("udp", n1.GossipAddr())
	require.NoError(t, err)
	defer udp.Close()
	for _, p := range other {
		_, err := udp.Write(p)
		require.NoError(t, err)
	}
	for _, stream := range [][]byte{random, labeled([]byte{8}, random[:200]), labeled([]byte{6}, random[:200]), nil} {
		c, err := net.DialTimeout("tcp", n1.GossipAddr(), 2*time.Second)
		require.NoError(t, err)
		_, _ = c.Write(stream)
		require.NoError(t, c.Close())
	}
	const dropped = "dropped a gossip message that does not decode"
	require.Eventually(t, func() bool {
		for _, p := range userMsgs { // UDP may lose a packet: send until heard
			if _, err := udp.Write(p); err != nil {
				return false
			}
		}
		return logs.count(dropped) >= len(userMsgs)
	}, 5*time.Second, 20*time.Millisecond, "the garbage user messages never reached the decoder")

	// Still a working member.
	waitMembers(t, nodes, 3)
	r := submit(t, n2, event("bob", "s8", "still there?"))
	assert.Equal(t, float64(1), r.Body["recipients"])
	_, inner := apiNextEvent(t, alice, 1)
	assert.Equal(t, "still there?", inner["message"])
	submit(t, n1, event("alice", "s8", "yes"))
	_, inner = apiNextEvent(t, bob, 1)
	assert.Equal(t, "yes", inner["message"])
	carol, _ := attach(t, n2, "carol", sessionQuery("s8"), nil)
	submit(t, n1, event("alice", "s8", "hello carol"))
	_, inner = apiNextEvent(t, carol, 1)
	assert.Equal(t, "hello carol", inner["message"])
	for _, m := range n1.cluster.Members() {
		assert.Contains(t, []string{"node-1", "node-2", "node-3"}, m.Name, "garbage added a member")
	}
}

// TestClusterFaultDirectoryMessageFromNonMemberIsIgnored: a directory
// message that decodes but names a node that is not a member (a forged
// one, or a late one from a node that departed long ago) must not create
// entries: nothing would ever drop them (entries vanish when their node
// leaves or dies), and every submit to their sessions would answer 502.
func TestClusterFaultDirectoryMessageFromNonMemberIsIgnored(t *testing.T) {
	nodes := cfCluster(t, 2, Config{}, nil, nil)
	n1 := nodes[0]
	forged := `u{"n":"intruder","ep":1,"r":[{"p":"evil"},{"p":"evil","s":"s9"}]}`
	r := postJSON(t, n1.URL()+directoryPath, forged, nil)
	require.Contains(t, []int{http.StatusOK, http.StatusBadRequest, http.StatusConflict}, r.Status, "%s", r.Raw)
	assert.Empty(t, dirSession(n1, "s9"), "a non-member's entries were applied")
	a := sendBounded(http.MethodPost, n1.URL()+apiEventsPath, event("x", "s9", "to a phantom"), nil, 10*time.Second)
	require.NoError(t, a.err)
	apiRequireError(t, a.api(), http.StatusNotFound, wire.CodeRecipientNotFound, "")
}

// ---------------------------------------------------------------------------
// 9. Directory convergence under churn.

// cfEntry is a directory entry with empty sessions normalised.
func cfEntry(e membership.Entry) membership.Entry {
	if len(e.Sessions) == 0 {
		e.Sessions = nil
	}
	return e
}

func cfEntries(es []membership.Entry) []membership.Entry {
	out := make([]membership.Entry, 0, len(es))
	for _, e := range es {
		out = append(out, cfEntry(e))
	}
	return out
}

// TestClusterFaultDirectoryConvergesUnderChurn runs 200 attach, close,
// join and leave operations of participants spread over 5 nodes (each
// participant always on the same node, so that no attach moves it from
// another), then requires every node's directory to equal the truth
// computed from what is attached where: every participant ever attached is
// listed at its node (offline ones too: they stay routable for OfflineTTL),
// with the sessions it is in and online while it has a connection.
func TestClusterFaultDirectoryConvergesUnderChurn(t *testing.T) {
	// The random churn may hold more connections of one participant than
	// the default cap of 8 (and a closed one is counted until its node
	// sees it go): lift the cap, it is not what this test is about.
	nodes := cfCluster(t, 5, Config{MaxConnectionsPerParticipant: 1000}, nil, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	type key struct {
		node int
		p    string
	}
	type state struct {
		conns    []*client
		sessions map[string]bool
	}
	truth := map[key]*state{}
	var keys []key // in creation order, for reproducible picks
	sessions := []string{"cs-0", "cs-1", "cs-2", "cs-3", "cs-4", "cs-5"}
	participants := make([]string, 24)
	for i := range participants {
		participants[i] = fmt.Sprintf("churn-%02d", i)
	}
	openConns := func() (ks []key) {
		for _, k := range keys {
			if len(truth[k].conns) > 0 {
				ks = append(ks, k)
			}
		}
		return ks
	}
	ops := map[string]int{}
	for op := range 200 {
		open := openConns()
		roll := rng.IntN(10)
		switch {
		case roll < 5 || len(open) == 0: // attach, with 0 to 2 sessions
			i := rng.IntN(len(participants))
			k := key{i % len(nodes), participants[i]} // each participant has one home: no takeovers
			var q []string
			for range rng.IntN(3) {
				q = append(q, sessions[rng.IntN(len(sessions))])
			}
			c, _ := attach(t, nodes[k.node], k.p, sessionQuery(q...), nil)
			s := truth[k]
			if s == nil {
				s = &state{sessions: map[string]bool{}}
				truth[k] = s
				keys = append(keys, k)
			}
			s.conns = append(s.conns, c)
			for _, x := range q {
				s.sessions[x] = true
			}
			ops["attach"]++
		case roll < 8: // close a connection
			k := open[rng.IntN(len(open))]
			s := truth[k]
			i := rng.IntN(len(s.conns))
			require.NoError(t, s.conns[i].Conn.Close(websocket.StatusNormalClosure, ""))
			s.conns = slices.Delete(s.conns, i, i+1)
			ops["close"]++
		default: // join or leave a session over a connection
			k := open[rng.IntN(len(open))]
			s := truth[k]
			c := s.conns[rng.IntN(len(s.conns))]
			session := sessions[rng.IntN(len(sessions))]
			kind := "join"
			if s.sessions[session] && rng.IntN(2) == 0 {
				kind = "leave"
			}
			id := fmt.Sprint("op-", op)
			c.Send(map[string]any{"type": kind, "id": id, "session_id": session})
			f := c.Next()
			require.Equal(t, "result", f["type"], "%v", f)
			require.Equal(t, id, f["id"], "%v", f)
			require.Equal(t, float64(http.StatusOK), f["status"], "%v", f)
			s.sessions[session] = kind == "join"
			ops[kind]++
		}
	}
	t.Logf("operations: %v; %d participant homes", ops, len(keys))

	// The truth, as the directory's lookups answer it: a session's members
	// (participant, node, type), a participant's homes (with online).
	bySession := map[string][]membership.Entry{}
	byParticipant := map[string][]membership.Entry{}
	for _, k := range keys {
		s := truth[k]
		e := membership.Entry{Participant: k.p, Type: "ai", Node: nodes[k.node].Name()}
		for x, in := range s.sessions {
			if in {
				bySession[x] = append(bySession[x], e)
			}
		}
		e.Online = len(s.conns) > 0
		byParticipant[k.p] = append(byParticipant[k.p], e)
	}
	sorted := func(es []membership.Entry) []membership.Entry {
		es = slices.Clone(es)
		slices.SortFunc(es, func(a, b membership.Entry) int {
			return cmp.Or(strings.Compare(a.Participant, b.Participant), strings.Compare(a.Node, b.Node))
		})
		if es == nil {
			es = []membership.Entry{}
		}
		return es
	}

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, observer := range nodes {
			for _, x := range sessions {
				assert.Equal(c, sorted(bySession[x]), cfEntries(dirSession(observer, x)), "%s's view of session %s", observer.Name(), x)
			}
			for _, p := range participants {
				assert.Equal(c, sorted(byParticipant[p]), cfEntries(dirParticipant(observer, p)), "%s's view of participant %s", observer.Name(), p)
			}
		}
	}, 10*time.Second, 50*time.Millisecond, "the directories did not converge to the truth")
}
