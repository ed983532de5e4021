package main

import (
	"net/http"
	"net/url"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// mpStart runs `switchyard serve` as node name of the multi-process test
// on a free gossip port, joining join unless it is "", and waits until it
// serves.
func mpStart(t *testing.T, bin, name string, join string) *process {
	t.Helper()
	cfg := serveConfig{name: name, flags: []string{
		"--rejoin-interval", "500ms",
		"--forward-timeout", "1s",
		"--drain-timeout", "5s",
	}}
	if join != "" {
		cfg.join = []string{join}
	}
	return startServe(t, bin, cfg)
}

// mpHomes lists the nodes base's view of session shows participant on
// (nil when the node does not answer).
func mpHomes(hc *nodeClient, base, session, participant string) []string {
	entries, _ := hc.homesOf(base, session, participant)
	var out []string
	for _, e := range entries {
		out = append(out, e.Node)
	}
	return out
}

// mpAttach attaches participant to the node at base in session.
func mpAttach(t *testing.T, base, participant, session string) *testkit.WS {
	t.Helper()
	return mpAttachQuery(t, base, url.Values{"participant_id": {participant}, "session_id": {session}})
}

func mpAttachQuery(t *testing.T, base string, q url.Values) *testkit.WS {
	t.Helper()
	w, _ := testkit.Attach(t, testkit.AttachURL(base, q), nil)
	return w
}

func mpMessage(f map[string]any) any {
	ev, _ := f["event"].(map[string]any)
	return ev["message"]
}

func mpTo(recipient, message string) map[string]any {
	return map[string]any{"sender_id": "carol", "sender_type": "ai", "event_type": "message",
		"message": message, "recipient_id": recipient}
}

// TestMultiProcessCluster runs three real `switchyard serve` processes:
// an event submitted on node 2 reaches participants on nodes 1 and 3 once;
// after kill -9 of node 3 the others stop routing to its participant;
// after SIGTERM of node 1 its WebSocket closes with 1001, it exits 0 and
// node 2 stops routing to its participant.
func TestMultiProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three processes")
	}
	bin := buildBinary(t)

	p1 := mpStart(t, bin, "mp-1", "")
	p2 := mpStart(t, bin, "mp-2", p1.gossipAddr)
	p3 := mpStart(t, bin, "mp-3", p1.gossipAddr)
	procs := []*process{p1, p2, p3}
	hc := newNodeClient(t)
	require.Eventually(t, func() bool {
		for _, p := range procs {
			ms := hc.members(p.url)
			for _, q := range procs {
				if ms[q.name] != "alive" {
					return false
				}
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "the three processes did not form a cluster")

	alice := mpAttach(t, p1.url, "alice", "mp")
	bob := mpAttach(t, p3.url, "bob", "mp")

	ev := map[string]any{"sender_id": "carol", "sender_type": "ai", "event_type": "message",
		"message": "first", "session_id": "mp"}
	a, err := hc.submit(t, p2.url, ev)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	assert.Equal(t, float64(2), a.body["recipients"])
	ev["message"] = "second"
	a, err = hc.submit(t, p2.url, ev)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	for _, w := range []*testkit.WS{alice, bob} {
		// Once: the frame after "first" is "second", not a duplicate.
		f := w.Next()
		assert.Equal(t, "first", mpMessage(f))
		assert.Equal(t, float64(1), f["seq"])
		f = w.Next()
		assert.Equal(t, "second", mpMessage(f))
		assert.Equal(t, float64(2), f["seq"])
	}

	// kill -9 node 3: nodes 1 and 2 stop routing to bob (memberlist LAN
	// defaults: failure detection takes several seconds).
	killedAt := time.Now()
	p3.signal(t, syscall.SIGKILL)
	p3.waitExit(t, 15*time.Second)
	require.Eventually(t, func() bool {
		for _, p := range []*process{p1, p2} {
			a, err := hc.submit(t, p.url, mpTo("bob", "after kill"))
			if !assert.NoError(t, err) || a.status == http.StatusOK {
				assert.NotEqual(t, http.StatusOK, a.status, "%s delivered to bob on a killed node: %s", p.name, a.raw)
				return false
			}
			assert.Contains(t, []int{http.StatusNotFound, http.StatusBadGateway}, a.status, a.raw)
			if a.status != http.StatusNotFound {
				return false
			}
			assert.Equal(t, "recipient_not_found", a.body["code"])
		}
		state := hc.members(p1.url)["mp-3"]
		return state == "dead" || state == ""
	}, 20*time.Second, 200*time.Millisecond, "nodes 1 and 2 kept routing to a killed node")
	t.Logf("kill -9: bob unroutable on nodes 1 and 2 after %v", time.Since(killedAt).Round(time.Millisecond))

	// SIGTERM node 1, where alice is attached.
	termAt := time.Now()
	p1.signal(t, syscall.SIGTERM)
	assert.Equal(t, websocket.StatusGoingAway, alice.CloseStatus(), "a draining node closes WebSockets with 1001")
	// Within 15 s of SIGTERM (drain timeout 5 s).
	assert.Equal(t, 0, p1.waitExit(t, 15*time.Second), "SIGTERM exits 0: %v", p1.waitErr)
	// It left the cluster, so node 2 routes nothing to it: alice (whose
	// home left) is either unknown (404) or was handed over to node 2 by
	// the draining node (200, homed on node 2 itself, never on node 1). A
	// 502 would mean node 2 still tried node 1.
	handedOver := false
	require.Eventually(t, func() bool {
		a, err := hc.submit(t, p2.url, mpTo("alice", "after term"))
		if !assert.NoError(t, err) {
			return false
		}
		switch a.status {
		case http.StatusNotFound:
			assert.Equal(t, "recipient_not_found", a.body["code"], a.raw)
			return true
		case http.StatusOK:
			homes := mpHomes(hc, p2.url, "mp", "alice")
			assert.NotContains(t, homes, "mp-1", "node 2 routed alice to a node that left: %s", a.raw)
			handedOver = slices.Contains(homes, "mp-2")
			return handedOver
		default:
			return false // 502: node 2 still tried node 1; must not last
		}
	}, 10*time.Second, 50*time.Millisecond, "node 2 kept routing to a node that left")
	if handedOver {
		// The drain handed alice over: reconnecting elsewhere with
		// resume_from (what close 1001 asks for) gets what waited.
		t.Log("node 1 handed alice over to node 2 while draining")
		alice2 := mpAttachQuery(t, p2.url, url.Values{"participant_id": {"alice"}, "resume_from": {"2"}})
		f := alice2.Next()
		assert.Equal(t, "after term", mpMessage(f), "%v", f)
		assert.Equal(t, float64(3), f["seq"], "%v", f)
	}
	state := hc.members(p2.url)["mp-1"]
	assert.Contains(t, []string{"left", ""}, state, "node 1 left gracefully, so node 2 lists it as left")
	t.Logf("SIGTERM: node 1 exited and node 2 routes nothing to it after %v", time.Since(termAt).Round(time.Millisecond))

}
