package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/membership"
)

// Cluster benchmarks. Unlike the cluster tests they run memberlist with its
// LAN defaults (probe every 1 s, gossip every 200 ms, push/pull every 30 s),
// as a deployment does. See docs/BENCHMARKS.md for the commands and figures.

// lanCluster is an in-process cluster with memberlist's LAN timings.
type lanCluster struct {
	tb      testing.TB
	nodes   []*Node
	mu      sync.Mutex
	crashed map[*Node]bool
	once    sync.Once
}

// startLANCluster runs size nodes on 127.0.0.1 with memberlist's default LAN
// timings and waits until every node sees all of them alive; they are shut
// down when the test or benchmark ends.
func startLANCluster(tb testing.TB, size int, cfg Config) []*Node {
	tb.Helper()
	return newLANCluster(tb, size, cfg, "lan-").nodes
}

// newLANCluster starts size nodes named prefix1, prefix2, …, each joining
// every node started before it (so that no node depends on gossip luck to
// learn of a later one), and waits until every node sees all of them
// alive. close (also run at the end of the test) shuts them down.
func newLANCluster(tb testing.TB, size int, cfg Config, prefix string) *lanCluster {
	tb.Helper()
	cl := &lanCluster{tb: tb, crashed: map[*Node]bool{}}
	tb.Cleanup(cl.close)
	var seeds []string
	for i := range size {
		c := cfg
		c.Listen = "127.0.0.1:0"
		c.Logger = testLogger()
		c.NodeName = fmt.Sprint(prefix, i+1)
		c.Gossip = &membership.GossipConfig{Bind: "127.0.0.1:0", Join: slices.Clone(seeds)}
		n, err := New(c)
		require.NoError(tb, err)
		n.Start()
		cl.nodes = append(cl.nodes, n)
		seeds = append(seeds, n.GossipAddr())
	}
	waitMembersWithin(tb, cl.nodes, size, 30*time.Second)
	return cl
}

// crash stops n the way kill -9 looks to its peers: its gossip stops
// without a leave, and its HTTP listener and connections are gone (its
// WebSocket clients must close their side).
func (cl *lanCluster) crash(n *Node) {
	cl.mu.Lock()
	cl.crashed[n] = true
	cl.mu.Unlock()
	_ = n.gossip.Shutdown()
	_ = n.srv.Close()
}

// close shuts the nodes down one by one (a node drains into its live
// peers, so they must not all drain at once), then waits until
// memberlist's probe goroutines, which its Shutdown does not wait for (a
// probe of a dead node can take a probe interval plus the TCP timeout),
// have returned.
func (cl *lanCluster) close() {
	cl.once.Do(func() {
		for i := len(cl.nodes) - 1; i >= 0; i-- {
			n := cl.nodes[i]
			cl.mu.Lock()
			crashed := cl.crashed[n]
			cl.mu.Unlock()
			if crashed {
				releaseCrashed(n)
			} else {
				shutdownLAN(cl.tb, n)
			}
		}
		require.Eventually(cl.tb, func() bool {
			buf := make([]byte, 1<<20)
			return !bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("hashicorp/memberlist."))
		}, 15*time.Second, 50*time.Millisecond, "memberlist goroutines outlived the cluster")
	})
}

// shutdownLAN shuts a node down. With LAN timings the leave broadcast may
// not finish within the second Node.Shutdown gives it once most peers have
// gone (see TestLANScaleDownDrainsWithoutError); that error alone is
// tolerated here, so that the benchmarks measure what they are about.
func shutdownLAN(tb testing.TB, n *Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil && !strings.Contains(err.Error(), "timeout waiting for leave broadcast") {
		tb.Errorf("shutting %s down: %v", n.Name(), err)
	}
}

// releaseCrashed releases what a crashed node still holds in this process
// (a real crash takes it with the process). Node.Shutdown cannot be used
// after a crash: it leaves the gossip cluster first, and memberlist panics
// on a leave after its shutdown.
func releaseCrashed(n *Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.hub.Shutdown(ctx)
	_ = n.tasks.Close(ctx) // the serve loop (the crash closed the server) and the sweeper
	n.peers.close()
}

// lanRoutesTo reports whether a submit on n for participant p would go to the
// node named home: n's directory has p there and n knows home's URL.
func lanRoutesTo(n *Node, p, home string) bool {
	if _, ok := n.cluster.NodeURL(home); !ok {
		return false
	}
	for _, e := range dirParticipant(n, p) {
		if e.Node == home {
			return true
		}
	}
	return false
}

// benchPollUntil checks cond at once and then every interval until it holds or
// timeout passes; it returns when it first held. It samples a condition for
// a measurement (as require.Eventually does for a test).
func benchPollUntil(timeout, interval time.Duration, cond func() bool) (time.Time, bool) {
	if cond() {
		return time.Now(), true
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return time.Now(), true
			}
		case <-deadline.C:
			return time.Time{}, false
		}
	}
}

// benchPercentile returns the q-quantile (0 < q ≤ 1) of sorted, by the
// nearest-rank method.
func benchPercentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchReportLatencies reports p50, p99 and max of samples in milliseconds, with
// prefix before each unit.
func benchReportLatencies(b *testing.B, prefix string, samples []time.Duration) {
	s := slices.Clone(samples)
	slices.Sort(s)
	b.ReportMetric(benchMS(benchPercentile(s, 0.50)), prefix+"p50-ms")
	b.ReportMetric(benchMS(benchPercentile(s, 0.99)), prefix+"p99-ms")
	b.ReportMetric(benchMS(s[len(s)-1]), prefix+"max-ms")
}

// BenchmarkConvergence: on a 10-node cluster with default LAN timings, each
// op attaches a new participant on a random node and measures the time from
// the start of the attach (the WebSocket dial) until every other node
// routes to it. Run with -benchtime 100x for the 100 attaches of the
// target. Reported: p50/p99/max in ms, the same for the welcome frame, and
// the share of attaches already routable everywhere at their welcome.
// Outside the timed part, every attach is proven with a real submit on
// another node that the participant receives.
func BenchmarkConvergence(b *testing.B) {
	nodes := startLANCluster(b, 10, Config{})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	var converged, welcomed []time.Duration
	atWelcome := 0
	i := 0
	for b.Loop() {
		i++
		home := nodes[rng.IntN(len(nodes))]
		p := fmt.Sprint("conv-", i)
		start := time.Now()
		c, _ := attach(b, home, p, sessionQuery("conv-s-"+strconv.Itoa(i)), nil)
		welcomed = append(welcomed, time.Since(start))
		everywhere := func() bool {
			for _, n := range nodes {
				if n != home && !lanRoutesTo(n, p, home.Name()) {
					return false
				}
			}
			return true
		}
		if everywhere() {
			atWelcome++
		}
		at, ok := benchPollUntil(10*time.Second, 100*time.Microsecond, everywhere)
		require.True(b, ok, "%s on %s was not routable everywhere within 10s", p, home.Name())
		converged = append(converged, at.Sub(start))

		b.StopTimer()
		other := nodes[rng.IntN(len(nodes))]
		for other == home {
			other = nodes[rng.IntN(len(nodes))]
		}
		ev := event("src", "conv-s-"+strconv.Itoa(i), "ping")
		body, _ := json.Marshal(ev)
		r, err := hc.Post(other.URL()+"/v1/gateway/events", "application/json", bytes.NewReader(body))
		require.NoError(b, err)
		raw, _ := io.ReadAll(r.Body)
		_ = r.Body.Close()
		require.Equal(b, http.StatusOK, r.StatusCode, "submit on %s for %s: %s", other.Name(), p, raw)
		require.Equal(b, "ping", c.Next()["event"].(map[string]any)["message"])
		_ = c.Conn.CloseNow()
		b.StartTimer()
	}
	benchReportLatencies(b, "", converged)
	benchReportLatencies(b, "welcome-", welcomed)
	b.ReportMetric(100*float64(atWelcome)/float64(len(converged)), "%routable-at-welcome")
}

// BenchmarkCrossNodeDelivery: 2 nodes with default LAN timings; events are
// submitted over REST on node A at a fixed 2,000 per second (each op is one
// event, paced; -benchtime 6000x runs 3 seconds) to a participant attached
// to node B, and the latency is measured from just before the submit
// request is sent to the moment the client on B has read the frame.
// Reported: p50/p99/max in ms and the delivered events per second.
func BenchmarkCrossNodeDelivery(b *testing.B) {
	const rate = 2000
	interval := time.Second / rate
	nodes := startLANCluster(b, 2, Config{})
	a, bn := nodes[0], nodes[1]
	rx, _ := attach(b, bn, "latency", nil, nil)

	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	type record struct{ sent, received atomic.Int64 }
	var mu sync.Mutex
	var records []*record
	lookup := func(i int) *record {
		mu.Lock()
		defer mu.Unlock()
		if i < 0 || i >= len(records) {
			return nil
		}
		return records[i]
	}

	// The receiver reads and timestamps every frame until it is stopped.
	var received atomic.Int64
	rxDone := make(chan error, 1)
	rxCtx, rxCancel := context.WithCancel(context.Background())
	defer rxCancel()
	go func() {
		var f struct {
			Type  string `json:"type"`
			Event struct {
				Message string `json:"message"`
			} `json:"event"`
		}
		for {
			_, data, err := rx.Conn.Read(rxCtx)
			now := time.Now().UnixNano()
			if err != nil {
				if rxCtx.Err() != nil {
					err = nil // stopped
				}
				rxDone <- err
				return
			}
			if err := json.Unmarshal(data, &f); err != nil || f.Type != "event" {
				rxDone <- fmt.Errorf("unexpected frame %s", data)
				return
			}
			i, err := strconv.Atoi(strings.TrimPrefix(f.Event.Message, "lat-"))
			r := lookup(i)
			if err != nil || r == nil {
				rxDone <- fmt.Errorf("unexpected event %q", f.Event.Message)
				return
			}
			r.received.Store(now)
			received.Add(1)
		}
	}()

	// Senders: a pool, so a slow answer never holds the pace back.
	jobs := make(chan int, 1<<16)
	var failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				body := fmt.Appendf(nil, `{"sender_id":"src","sender_type":"ai","event_type":"message","message":"lat-%d","recipient_id":"latency"}`, i)
				r := lookup(i)
				r.sent.Store(time.Now().UnixNano())
				resp, err := hc.Post(a.URL()+"/v1/gateway/events", "application/json", bytes.NewReader(body))
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, raw))
				}
			}
		}()
	}

	n := 0
	var start time.Time
	for b.Loop() {
		if n == 0 {
			start = time.Now()
		}
		if d := time.Until(start.Add(time.Duration(n) * interval)); d > 0 {
			time.Sleep(d) // pacing the fixed-rate load
		}
		mu.Lock()
		records = append(records, &record{})
		mu.Unlock()
		jobs <- n
		n++
	}
	close(jobs)
	wg.Wait()
	if failures.Load() > 0 {
		b.Fatalf("%d of %d submits failed; first: %v", failures.Load(), n, firstErr.Load())
	}
	_, all := benchPollUntil(30*time.Second, time.Millisecond, func() bool { return received.Load() >= int64(n) })
	rxCancel()
	require.NoError(b, <-rxDone)
	require.True(b, all, "only %d of %d events arrived", received.Load(), n)

	lat := make([]time.Duration, 0, n)
	var first, last int64 = math.MaxInt64, 0
	for _, r := range records {
		lat = append(lat, time.Duration(r.received.Load()-r.sent.Load()))
		first = min(first, r.sent.Load())
		last = max(last, r.received.Load())
	}
	benchReportLatencies(b, "", lat)
	b.ReportMetric(float64(n)/time.Duration(last-first).Seconds(), "events/s")
}

// BenchmarkFailureDetection measures, with default LAN timings, the time
// from a node's ungraceful stop (its gossip shut down without a leave, its
// HTTP listener closed, its WebSocket clients gone: what kill -9 does)
// until no other node routes to its participant. Each op (untimed: setup
// and teardown) starts a fresh cluster whose last node is the victim, so
// that earlier victims do not linger in memberlist's node count, which
// scales the suspicion timeout. It takes several seconds per op, so it
// runs only with SWITCHYARD_MEASURE=1.
func BenchmarkFailureDetection(b *testing.B) {
	if os.Getenv("SWITCHYARD_MEASURE") == "" {
		b.Skip("set SWITCHYARD_MEASURE=1: each op takes several seconds (memberlist LAN failure detection)")
	}
	for _, size := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			var samples []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				cl := newLANCluster(b, size, Config{}, fmt.Sprintf("fd%d-", i))
				victim, survivors := cl.nodes[size-1], cl.nodes[:size-1]
				p := fmt.Sprint("doomed-", i)
				c, _ := attach(b, victim, p, sessionQuery("doomed"), nil)
				_, ok := benchPollUntil(10*time.Second, time.Millisecond, func() bool {
					for _, n := range survivors {
						if !lanRoutesTo(n, p, victim.Name()) {
							return false
						}
					}
					return true
				})
				require.True(b, ok, "the victim's participant never became routable")
				b.StartTimer()

				start := time.Now()
				cl.crash(victim)
				_ = c.Conn.CloseNow()
				at, ok := benchPollUntil(2*time.Minute, time.Millisecond, func() bool {
					for _, n := range survivors {
						if len(dirParticipant(n, p)) > 0 {
							return false
						}
					}
					return true
				})
				require.True(b, ok, "the survivors still route to a crashed node after 2 minutes")
				samples = append(samples, at.Sub(start))

				b.StopTimer()
				cl.close()
				b.StartTimer()
			}
			s := slices.Clone(samples)
			slices.Sort(s)
			var sum time.Duration
			for _, d := range s {
				sum += d
			}
			b.ReportMetric(benchMS(sum/time.Duration(len(s))), "mean-ms")
			b.ReportMetric(benchMS(s[0]), "min-ms")
			b.ReportMetric(benchMS(s[len(s)-1]), "max-ms")
		})
	}
}

// TestLANScaleDownDrainsWithoutError scales a 10-node cluster with
// memberlist's LAN defaults down one node at a time, as a rolling
// scale-down does: every graceful shutdown must succeed (SPEC section 5:
// on SIGTERM a node ... exits 0 within --drain-timeout).
func TestLANScaleDownDrainsWithoutError(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10 seconds")
	}
	var nodes []*Node
	var seeds []string
	for i := range 10 {
		n, err := New(Config{Listen: "127.0.0.1:0", NodeName: fmt.Sprintf("down-%d", i+1), Logger: testLogger(),
			Gossip: &membership.GossipConfig{Bind: "127.0.0.1:0", Join: slices.Clone(seeds)}})
		require.NoError(t, err)
		n.Start()
		t.Cleanup(func() { // after a failure: release the rest
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx)
		})
		seeds = append(seeds, n.GossipAddr())
		nodes = append(nodes, n)
	}
	waitMembersWithin(t, nodes, 10, 30*time.Second)
	for i := len(nodes) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err := nodes[i].Shutdown(ctx)
		cancel()
		require.NoError(t, err, "graceful shutdown of %s with %d peers left (took %v)",
			nodes[i].Name(), i, time.Since(start).Round(time.Millisecond))
	}
}
