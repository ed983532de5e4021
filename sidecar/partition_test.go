package sidecar

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/membership"
)

// partitionNode is one node of the partition test with its faults.
type partitionNode struct {
	*Node
	transport *faultTransport
	proxy     *faultProxy
}

// direct is the node's own listener, bypassing its proxy: the test's own
// requests and WebSockets are never cut.
func (pn partitionNode) direct() string { return directURL(pn.Node) }

// attachDirect attaches participant to the node's own listener and returns
// the client after its welcome.
func (pn partitionNode) attachDirect(t testing.TB, participant string, sessions ...string) *client {
	t.Helper()
	q := url.Values{"participant_id": {participant}, "session_id": sessions}
	cl, _ := testkit.Attach(t, "ws://"+pn.Addr().String()+wsPath+"?"+q.Encode(), nil)
	return cl
}

// partitionSubmit submits ev on base with a bounded wait: a submit that
// hangs fails the test instead of stalling it.
func partitionSubmit(base string, ev map[string]any) boundedAnswer {
	return sendBounded(http.MethodPost, base+apiEventsPath, ev, nil, 15*time.Second)
}

func partitionToBob(message string) map[string]any {
	return map[string]any{"sender_id": "carol", "sender_type": "ai", "event_type": "message",
		"message": message, "session_id": "part", "recipient_id": "bob"}
}

// TestPartitionCutNodeIsDroppedAndRejoinsWithoutRestart cuts node 3 (where
// bob is attached) off the gossip and HTTP network: submits on node 1 for
// bob answer 502 (its node cannot be reached) or, once node 3 is declared
// dead, 404, never hanging past the forward deadline. After healing,
// nothing is restarted: node 3 rejoins by its periodic rejoin, the nodes
// exchange full state, and node 1 routes to bob again (and node 3 to a
// participant on node 1).
func TestPartitionCutNodeIsDroppedAndRejoinsWithoutRestart(t *testing.T) {
	const forwardTimeout = time.Second
	fnet := newFaultNet()
	var nodes []partitionNode
	for i := range 3 {
		tr := newFaultTransport(t, fnet)
		px := newFaultProxy(t) // before the node: its URL is the node's advertised URL
		gc := membership.GossipConfig{Bind: tr.addr, Transport: tr, Memberlist: fastGossip,
			RejoinInterval: 300 * time.Millisecond, SyncTimeout: 500 * time.Millisecond}
		if i > 0 {
			gc.Join = []string{nodes[0].transport.addr}
		}
		n := startNode(t, Config{NodeName: fmt.Sprintf("node-%d", i+1), AdvertiseURL: px.URL(), Gossip: &gc,
			ForwardTimeout: forwardTimeout, PeerAttemptTimeout: 300 * time.Millisecond})
		px.setTarget(n)
		nodes = append(nodes, partitionNode{Node: n, transport: tr, proxy: px})
	}
	waitMembers(t, []*Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	bob := n3.attachDirect(t, "bob", "part")
	alice := n1.attachDirect(t, "alice", "part")
	a := partitionSubmit(n1.direct(), partitionToBob("before"))
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, "%s", a.raw)
	require.Equal(t, "before", bob.Next()["event"].(map[string]any)["message"])

	// Cut node 3 off: gossip both ways, and HTTP into it.
	fnet.setCut(n3.transport.addr, true)
	n3.proxy.setCut(true)
	cutAt := time.Now()

	cutSubmits := 0
	var statuses sync.Map // status → count, for the log
	require.Eventually(t, func() bool {
		cutSubmits++
		msg := fmt.Sprint("cut-", cutSubmits)
		for _, n := range []partitionNode{n1, n2} {
			a := partitionSubmit(n.direct(), partitionToBob(msg))
			if !assert.NoError(t, a.err) {
				return false
			}
			assert.Less(t, a.elapsed, forwardTimeout+2*time.Second, "a submit hung past the forward deadline")
			v, _ := statuses.LoadOrStore(a.status, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			switch a.status {
			case http.StatusBadGateway:
				assert.Equal(t, "recipients_unreachable", a.body["code"], "%s", a.raw)
				assert.Equal(t, []any{"bob"}, a.body["failed"], "%s", a.raw)
				return false
			case http.StatusNotFound:
				assert.Equal(t, "recipient_not_found", a.body["code"], "%s", a.raw)
			default:
				assert.Failf(t, "a cut-off node was reached", "%s answered %d while node 3 was cut off: %s",
					n.Name(), a.status, a.raw)
				return false
			}
		}
		// Both say node 3 is dead, and node 3 says both others are.
		return memberStates(n1.direct(), nil)["node-3"] == membership.StateDead &&
			memberStates(n2.direct(), nil)["node-3"] == membership.StateDead &&
			memberStates(n3.direct(), nil)["node-1"] == membership.StateDead &&
			memberStates(n3.direct(), nil)["node-2"] == membership.StateDead
	}, 10*time.Second, 20*time.Millisecond, "the peers kept routing to a cut-off node")
	t.Logf("node 3 dropped by its peers %v after the cut; answers while cut: %v",
		time.Since(cutAt).Round(time.Millisecond), partitionStatusCounts(&statuses))
	assert.Positive(t, n3.transport.dropped.Load(), "the cut lost no packet: the fault was not injected")

	// Heal. Nothing is restarted.
	fnet.setCut(n3.transport.addr, false)
	n3.proxy.setCut(false)
	healAt := time.Now()
	var delivered string
	attempts := 0
	require.Eventually(t, func() bool {
		attempts++
		msg := fmt.Sprint("heal-", attempts)
		a := partitionSubmit(n1.direct(), partitionToBob(msg))
		if !assert.NoError(t, a.err) {
			return false
		}
		assert.Contains(t, []int{http.StatusOK, http.StatusNotFound, http.StatusBadGateway}, a.status, "%s", a.raw)
		if a.status == http.StatusOK {
			delivered = msg
			return true
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "node 1 never routed to bob again after the partition healed")
	t.Logf("node 1 routes to bob again %v after healing (%d attempts)", time.Since(healAt).Round(time.Millisecond), attempts)

	// bob gets it; nothing submitted while cut ever arrives.
	for {
		f := bob.Next()
		require.Equal(t, "event", f["type"], "%v", f)
		m := f["event"].(map[string]any)["message"].(string)
		require.True(t, strings.HasPrefix(m, "heal-"), "bob got %q, submitted while node 3 was cut off", m)
		if m == delivered {
			break
		}
	}

	// The other way round, and from the other peer: node 3 knows alice
	// again, and node 2 routes to bob.
	require.Eventually(t, func() bool {
		a := partitionSubmit(n3.direct(), map[string]any{"sender_id": "bob", "sender_type": "ai", "event_type": "message",
			"message": "from node 3", "recipient_id": "alice"})
		return a.err == nil && a.status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "node 3 never routed to alice on node 1 again")
	require.Equal(t, "from node 3", alice.Next()["event"].(map[string]any)["message"])
	require.Eventually(t, func() bool {
		return partitionSubmit(n2.direct(), partitionToBob("via node 2")).status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "node 2 never routed to bob again")
	require.Equal(t, "via node 2", bob.Next()["event"].(map[string]any)["message"])
	waitMembers(t, []*Node{n1.Node, n2.Node, n3.Node}, 3)
}

func partitionStatusCounts(m *sync.Map) map[int]int64 {
	out := map[int]int64{}
	m.Range(func(k, v any) bool {
		out[k.(int)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}
