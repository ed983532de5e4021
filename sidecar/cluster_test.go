package sidecar

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/membership"
)

// fastGossip shortens memberlist's timers so tests see joins, failures and
// anti-entropy in a fraction of a second (shared with the membership and
// client tests).
var fastGossip = testkit.FastGossip

// startCluster runs size nodes on 127.0.0.1 with random ports, every node
// joining the first, and waits until every node sees all of them.
func startCluster(t testing.TB, size int, cfg Config) []*Node {
	t.Helper()
	var nodes []*Node
	var seed string
	for i := range size {
		c := cfg
		c.NodeName = fmt.Sprintf("node-%d", i+1)
		gc := membership.GossipConfig{Bind: "127.0.0.1:0", Memberlist: fastGossip, RejoinInterval: 500 * time.Millisecond}
		if seed != "" {
			gc.Join = []string{seed}
		}
		c.Gossip = &gc
		n := startNode(t, c)
		if seed == "" {
			seed = n.gossip.GossipAddr()
		}
		nodes = append(nodes, n)
	}
	waitMembers(t, nodes, size)
	return nodes
}

// waitMembers waits until every node counts want alive members and has
// settled (learnt the others' participants).
func waitMembers(t testing.TB, nodes []*Node, want int) {
	t.Helper()
	waitMembersWithin(t, nodes, want, 10*time.Second)
}

// waitMembersWithin is waitMembers with its own deadline (memberlist's LAN
// defaults form a cluster more slowly than the tests' fast gossip).
func waitMembersWithin(t testing.TB, nodes []*Node, want int, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if !n.Settled() {
				return false
			}
			alive := 0
			for _, m := range n.cluster.Members() {
				if m.State == membership.StateAlive {
					alive++
				}
			}
			if alive != want {
				return false
			}
		}
		return true
	}, timeout, 10*time.Millisecond, "the cluster did not form")
}

func TestClusterSubmitReachesParticipantsOnOtherNodes(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	bob, _ := attach(t, nodes[1], "bob", sessionQuery("s1"), nil)
	alice, _ := attach(t, nodes[2], "alice", sessionQuery("s1"), nil)

	r := submit(t, nodes[0], event("carol", "s1", "hello cluster"))
	assert.Equal(t, float64(2), r.Body["recipients"])
	for _, c := range []*client{bob, alice} {
		f := c.Next()
		assert.Equal(t, uint64(1), seqOf(f))
		assert.Equal(t, "hello cluster", f["event"].(map[string]any)["message"])
		assert.Equal(t, r.Body["event_id"], f["event_id"])
	}

	// A reply from bob (on node 2) reaches alice (node 3) only, once.
	submit(t, nodes[1], event("bob", "s1", "reply"))
	f := alice.Next()
	assert.Equal(t, uint64(2), seqOf(f))
	assert.Equal(t, "reply", f["event"].(map[string]any)["message"])

	// The session view on any node shows where everyone lives.
	view := do(t, http.MethodGet, nodes[0].URL()+"/v1/gateway/sessions/s1", nil, nil)
	require.Equal(t, http.StatusOK, view.Status)
	parts := view.Body["participants"].([]any)
	require.Len(t, parts, 2)
	assert.Equal(t, "alice", parts[0].(map[string]any)["participant_id"])
	assert.Equal(t, "node-3", parts[0].(map[string]any)["node"])
	assert.Equal(t, "node-2", parts[1].(map[string]any)["node"])

	members := do(t, http.MethodGet, nodes[0].URL()+"/v1/gateway/members", nil, nil)
	list := members.Body["members"].([]any)
	require.Len(t, list, 3)
	for i, m := range list {
		m := m.(map[string]any)
		assert.Equal(t, fmt.Sprintf("node-%d", i+1), m["name"])
		assert.Equal(t, nodes[i].URL(), m["url"])
		assert.Equal(t, "alive", m["state"])
		assert.Equal(t, i == 0, m["self"])
	}
}

// TestClusterAttachThenSubmitElsewhereNeverMisses: a submit on another node
// right after the welcome frame finds the new participant, every time.
func TestClusterAttachThenSubmitElsewhereNeverMisses(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	for i := range 100 {
		session := fmt.Sprint("race-", i)
		p := fmt.Sprint("p", i)
		c, _ := attach(t, nodes[1+i%2], p, sessionQuery(session), nil)
		r := postJSON(t, nodes[0].URL()+"/v1/gateway/events", event("x", session, "now"), nil)
		require.Equal(t, http.StatusOK, r.Status, "attempt %d: %s", i, r.Raw)
		require.Equal(t, "now", c.Next()["event"].(map[string]any)["message"])
		require.NoError(t, c.Conn.CloseNow())
	}
}

func TestClusterRecipientIDOnAnotherNode(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	bob, _ := attach(t, nodes[1], "bob", url.Values{}, nil)
	ev := event("alice", "", "direct")
	delete(ev, "session_id")
	ev["recipient_id"] = "bob"
	submit(t, nodes[0], ev)
	assert.Equal(t, "direct", bob.Next()["event"].(map[string]any)["message"])
}

// TestClusterRetryToAnotherNodeIsDeliveredOnce: the dedupe check lives on
// the recipient's home node, so it holds whichever node a retry reaches.
func TestClusterRetryToAnotherNodeIsDeliveredOnce(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	bob, _ := attach(t, nodes[2], "bob", sessionQuery("s1"), nil)
	attach(t, nodes[2], "carol", sessionQuery("s1"), nil)    // online too
	require.NoError(t, nodes[2].gw.Join("dave", "ai", "s1")) // offline: queued
	require.Eventually(t, func() bool { return len(dirSession(nodes[0], "s1")) == 3 },
		5*time.Second, 5*time.Millisecond, "node 1 learns of dave")

	ev := event("alice", "s1", "only once")
	ev["event_id"] = "idem-1"
	first := submit(t, nodes[0], ev)
	assert.Equal(t, float64(3), first.Body["recipients"])
	assert.Equal(t, float64(2), first.Body["live"])
	assert.Equal(t, float64(1), first.Body["queued"])
	assert.Equal(t, float64(0), first.Body["duplicates"])

	retry := submit(t, nodes[1], ev)
	assert.Equal(t, "idem-1", retry.Body["event_id"])
	assert.Equal(t, float64(3), retry.Body["recipients"], "the same 200")
	assert.Equal(t, float64(3), retry.Body["duplicates"])

	submit(t, nodes[1], event("alice", "s1", "next"))
	assert.Equal(t, "only once", bob.Next()["event"].(map[string]any)["message"])
	f := bob.Next()
	assert.Equal(t, uint64(2), seqOf(f))
	assert.Equal(t, "next", f["event"].(map[string]any)["message"], "the retry was not delivered again")
}
