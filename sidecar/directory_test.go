package sidecar

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/membership"
)

// pushesTo sums the directory pushes, and their bytes, that reached the
// nodes behind proxies.
func pushesTo(proxies map[int]*faultProxy) (pushes, bytes int64) {
	for _, px := range proxies {
		pushes += px.pushes.Load()
		bytes += px.pushBytes.Load()
	}
	return pushes, bytes
}

// joinFrame joins session over c and requires a 200 result.
func joinFrame(t *testing.T, c *client, session string) {
	t.Helper()
	id := "join-" + session
	c.Send(map[string]any{"type": "join", "id": id, "session_id": session})
	f := c.Next()
	require.Equal(t, "result", f["type"], "%v", f)
	require.Equal(t, id, f["id"], "%v", f)
	require.Equal(t, float64(http.StatusOK), f["status"], "%v", f)
}

// TestDirectoryJoinCostsOnlyTheSessionsOwners: in a cluster of five, a
// join is pushed to the session's two owners and no one else (the
// requests are counted where they arrive), however many sessions the
// participant is in already; and it is found from every node at once.
func TestDirectoryJoinCostsOnlyTheSessionsOwners(t *testing.T) {
	proxies := map[int]*faultProxy{}
	for i := range 5 {
		proxies[i] = newFaultProxy(t)
	}
	nodes := cfCluster(t, 5, Config{}, proxies, nil)
	agent, _ := attach(t, nodes[0], "agent", sessionQuery("first"), nil)
	join := func(session string) (pushes, bytes int64) {
		p0, b0 := pushesTo(proxies)
		joinFrame(t, agent, session)
		p1, b1 := pushesTo(proxies)
		return p1 - p0, b1 - b0
	}
	// Bytes per push: node 1 may be one of a session's owners itself (no
	// push for it), never both.
	perPush := func(session string, joined int) int64 {
		pushes, bytes := join(session)
		assert.LessOrEqual(t, pushes, int64(membership.DefaultReplicas), "a join with %d sessions joined", joined)
		require.Positive(t, pushes)
		return bytes / pushes
	}
	small := perPush("s-000", 1)
	for i := 1; i < 300; i++ {
		joinFrame(t, agent, fmt.Sprintf("s-%03d", i))
	}
	large := perPush("s-300", 300)
	assert.LessOrEqual(t, large, small+8,
		"the bytes of a join do not grow with the sessions joined: %d B a push with 1, %d B with 301", small, large)
	for _, n := range nodes { // the join's result came after its owners had it
		es := dirSession(n, "s-300")
		require.Len(t, es, 1, "%s", n.Name())
		assert.Equal(t, "node-1", es[0].Node)
	}
}

// TestDirectoryOwnershipMovesNeverLoseALiveParticipant: while a node
// joins the cluster (taking over some records) and then dies without
// leaving (its records move again), submits keep reaching participants
// that live on the other nodes: never a 404, never a 502.
func TestDirectoryOwnershipMovesNeverLoseALiveParticipant(t *testing.T) {
	nodes := cfCluster(t, 3, Config{ForwardTimeout: time.Second, PeerAttemptTimeout: 300 * time.Millisecond}, nil, nil)
	const participants = 24
	for i := range participants {
		attach(t, nodes[i%3], fmt.Sprint("p-", i), sessionQuery(fmt.Sprint("s-", i)), nil)
	}
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[int]int{}
		bad     []string
	)
	for k, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := i % participants
				a := sendBounded(http.MethodPost, n.URL()+apiEventsPath, event("x", fmt.Sprint("s-", s), "hello"), nil, 10*time.Second)
				mu.Lock()
				answers[a.status]++
				if a.err != nil || a.status != http.StatusOK {
					bad = append(bad, fmt.Sprintf("%s → s-%d: %d %v %s", n.Name(), s, a.status, a.err, a.raw))
				}
				mu.Unlock()
			}
		}()
	}
	submitted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return answers[http.StatusOK]
	}
	waitMore := func(k int) {
		from := submitted()
		require.Eventually(t, func() bool { return submitted() >= from+k }, 20*time.Second, 5*time.Millisecond)
	}
	waitMore(50)

	// A fourth node joins: it becomes an owner of about half the keys.
	px := newFaultProxy(t)
	kt := newFaultTransport(t, nil)
	gc := membership.GossipConfig{Bind: kt.addr, Transport: kt, Memberlist: fastGossip,
		RejoinInterval: 500 * time.Millisecond, Join: []string{nodes[0].GossipAddr()}}
	late := startNode(t, Config{NodeName: "node-4", AdvertiseURL: px.URL(), Gossip: &gc,
		ForwardTimeout: time.Second, PeerAttemptTimeout: 300 * time.Millisecond})
	px.setTarget(late)
	waitMembers(t, append(nodes[:3:3], late), 4)
	require.Eventually(t, func() bool {
		total, _ := late.gossip.HeldRecords("")
		return total > 0
	}, 10*time.Second, 10*time.Millisecond, "the newcomer never got its share of the records")
	waitMore(100)

	// It dies without leaving: its share moves back while it is not yet
	// declared dead (its owners' other half answers meanwhile).
	kt.kill()
	px.down()
	waitMembers(t, nodes, 3)
	waitMore(100)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers by status: %v", answers)
	assert.Empty(t, bad, "submits to live participants failed while ownership moved")
}
