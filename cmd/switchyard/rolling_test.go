package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/client"
)

// The rolling-restart test of issue 4: three real `switchyard serve`
// processes under continuous load from several REST senders, 100
// participants attached through the Go client; every node is restarted in
// turn with SIGTERM while the load runs; at the end every participant has
// every event of its session exactly once, in per-sender order.

const (
	rrNodes        = 3
	rrParticipants = 100
	rrSessions     = 10
	rrSenders      = 4
	// rrSendInterval paces each sender: 4 senders at ~one event per 15 ms
	// is at most ~270 events/s, each to 10 participants.
	rrSendInterval = 15 * time.Millisecond
)

// rrNode is one of the three node slots: fixed ports, so that a restarted
// process keeps the URL every client and peer knows.
type rrNode struct {
	slot       int
	listen     string // 127.0.0.1:P
	gossipAddr string // 127.0.0.1:G
	url        string
	gen        int
	proc       *process
}

func (n *rrNode) name() string { return fmt.Sprintf("n%d-gen%d", n.slot+1, n.gen) }

// rrStart runs `switchyard serve` for slot n's current generation, joining
// the other slots, and waits until it serves.
func rrStart(t *testing.T, bin string, n *rrNode, nodes []*rrNode) *process {
	t.Helper()
	cfg := serveConfig{name: n.name(), listen: n.listen, gossipAddr: n.gossipAddr, flags: []string{
		"--log-level", "debug",
		"--rejoin-interval", "1s",
		"--drain-timeout", "10s",
	}}
	for _, o := range nodes {
		if o != n {
			cfg.join = append(cfg.join, o.gossipAddr)
		}
	}
	return startServe(t, bin, cfg)
}

// rrReady reports whether every node answers /readyz 200 and lists exactly
// the current generation of the three as alive.
func rrReady(hc *nodeClient, nodes []*rrNode) bool {
	var want []string
	for _, n := range nodes {
		want = append(want, n.name())
	}
	slices.Sort(want)
	for _, n := range nodes {
		resp, err := hc.http.Get(n.url + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		var alive []string
		for name, state := range hc.members(n.url) {
			if state == "alive" {
				alive = append(alive, name)
			}
		}
		slices.Sort(alive)
		if !slices.Equal(alive, want) {
			return false
		}
	}
	return true
}

// rrDelivery is one event frame a participant received.
type rrDelivery struct {
	sender, n int
	seq       uint64
	session   string
}

type rrWelcome struct {
	at      time.Duration
	wall    time.Time
	node    string
	seq     uint64
	resumed bool
}

// rrParticipant records what one participant's client handed over.
type rrParticipant struct {
	id      string
	session string
	batch   bool

	mu       sync.Mutex
	got      []rrDelivery
	distinct map[[2]int]int // (sender, n) → times received
	welcomes []rrWelcome
	bad      []string // gap, error and undecodable frames
}

func (p *rrParticipant) handle(start time.Time) func(client.Frame) error {
	return func(f client.Frame) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch f.Type {
		case "welcome":
			p.welcomes = append(p.welcomes, rrWelcome{at: time.Since(start), wall: time.Now(), node: f.Node, seq: f.Seq, resumed: f.Resumed})
		case "event":
			var k, n int
			if _, err := fmt.Sscanf(f.EventID, "sender-%d-%d", &k, &n); err != nil {
				p.bad = append(p.bad, "unexpected event: "+string(f.Raw))
				return nil
			}
			p.got = append(p.got, rrDelivery{sender: k, n: n, seq: f.Seq, session: f.SessionID})
			p.distinct[[2]int{k, n}]++
		case "gap", "error":
			p.bad = append(p.bad, string(f.Raw))
		}
		return nil
	}
}

func (p *rrParticipant) attached() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.welcomes) > 0
}

// rrSent is what the senders had accepted (200): per sender, per session,
// the event numbers in the order they were sent.
type rrSent struct {
	mu      sync.Mutex
	n       [rrSenders][rrSessions][]int
	retries atomic.Int64
	byCode  map[int]int // failed attempts by status (0: network error)
	short   []string    // 200 answers with fewer than 10 recipients
	dups    int         // 200 answers counting duplicates (a retry that had landed)
	err     error
}

func rrSession(i int) string { return "s" + strconv.Itoa(i) }

// rrSend submits events n = 1, 2, … for sender k until ctx ends, retrying
// each one (same event_id) on another node until it is answered 200.
func rrSend(ctx context.Context, hc *http.Client, k int, urls []string, sent *rrSent) {
	tick := time.NewTicker(rrSendInterval)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := (n + k) % rrSessions
		body, _ := json.Marshal(map[string]any{
			"sender_id": fmt.Sprintf("sender-%d", k), "sender_type": "ai", "event_type": "message",
			"session_id": rrSession(s), "event_id": fmt.Sprintf("sender-%d-%d", k, n),
			"message": fmt.Sprintf("sender %d event %d", k, n),
		})
		node := rand.IntN(len(urls))
		deadline := time.Now().Add(30 * time.Second)
		for attempt := 0; ; attempt++ {
			sentAt := time.Now()
			ans, err := postEvent(hc, urls[node], body)
			status := ans.status
			if err == nil && status == http.StatusOK {
				sent.mu.Lock()
				sent.n[k][s] = append(sent.n[k][s], n)
				if ans.count("recipients") < rrParticipants/rrSessions {
					sent.short = append(sent.short, fmt.Sprintf("sent %s, answered %s: sender-%d-%d (session %s) to %s: %s",
						sentAt.UTC().Format("15:04:05.000"), time.Now().UTC().Format("15:04:05.000"),
						k, n, rrSession(s), urls[node], ans.raw))
				}
				if ans.count("duplicates") > 0 {
					sent.dups++
				}
				sent.mu.Unlock()
				break
			}
			sent.retries.Add(1)
			sent.mu.Lock()
			sent.byCode[status]++
			sent.mu.Unlock()
			if time.Now().After(deadline) {
				sent.mu.Lock()
				if sent.err == nil {
					sent.err = fmt.Errorf("sender-%d event %d: no 200 within 30s; last try: status %d, err %v", k, n, status, err)
				}
				sent.mu.Unlock()
				return
			}
			// Mid-event, the sender keeps retrying even when the load is
			// stopped: an event left unanswered would be neither counted
			// nor known to be lost.
			time.Sleep(time.Duration(20+rand.IntN(30)) * time.Millisecond)
			node = (node + 1) % len(urls)
		}
	}
}

// TestRollingRestartLosesNothing: 3 processes, 4 REST senders, 100
// participants through the Go client; every node is restarted with SIGTERM
// in turn while the load runs; every participant ends with every event of
// its session exactly once, per-sender in order, seqs increasing, no gap.
func TestRollingRestartLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and restarts three processes under load")
	}
	bin := buildBinary(t)
	start := time.Now()

	// Fixed ports for the whole test, HTTP and gossip, all distinct.
	used := map[int]bool{}
	port := func() int {
		for {
			if p := freePort(t); !used[p] {
				used[p] = true
				return p
			}
		}
	}
	nodes := make([]*rrNode, rrNodes)
	for i := range nodes {
		hp, gp := port(), port()
		nodes[i] = &rrNode{slot: i, gen: 1,
			listen:     net.JoinHostPort("127.0.0.1", strconv.Itoa(hp)),
			gossipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(gp))}
		nodes[i].url = "http://" + nodes[i].listen
	}
	for _, n := range nodes {
		n.proc = rrStart(t, bin, n, nodes)
	}
	hc := newNodeClient(t)
	require.Eventually(t, func() bool { return rrReady(hc, nodes) }, 30*time.Second, 100*time.Millisecond,
		"the three processes did not form a cluster")
	t.Logf("cluster of 3 ready after %v", time.Since(start).Round(time.Millisecond))
	urls := make([]string, rrNodes)
	for i, n := range nodes {
		urls[i] = n.url
	}

	// 100 participants through the Go client, spread over the nodes.
	wsTransport := &http.Transport{Proxy: nil}
	t.Cleanup(wsTransport.CloseIdleConnections)
	wsHTTP := &http.Client{Transport: wsTransport}
	parts := make([]*rrParticipant, rrParticipants)
	clientsCtx, stopClients := context.WithCancel(context.Background())
	var clientsWG sync.WaitGroup
	runErrs := make(chan error, rrParticipants)
	stopAllClients := func() {
		stopClients()
		clientsWG.Wait()
		wsTransport.CloseIdleConnections()
	}
	t.Cleanup(stopAllClients) // runs before the processes are killed (cleanups are LIFO)
	for i := range parts {
		p := &rrParticipant{id: fmt.Sprintf("p%03d", i), session: rrSession(i % rrSessions), batch: i%2 == 0,
			distinct: map[[2]int]int{}}
		parts[i] = p
		off := i % rrNodes
		cl, err := client.New(client.Config{
			URLs:          append(slices.Clone(urls[off:]), urls[:off]...),
			ParticipantID: p.id,
			Sessions:      []string{p.session},
			Batch:         p.batch,
			MinBackoff:    50 * time.Millisecond,
			MaxBackoff:    time.Second,
			HTTPClient:    wsHTTP,
		})
		require.NoError(t, err)
		clientsWG.Add(1)
		go func() {
			defer clientsWG.Done()
			if err := cl.Run(clientsCtx, p.handle(start)); err != nil {
				runErrs <- fmt.Errorf("%s: %w", p.id, err)
			}
		}()
	}
	require.Eventually(t, func() bool {
		for _, p := range parts {
			if !p.attached() {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the 100 participants did not all attach")
	t.Logf("100 participants attached after %v", time.Since(start).Round(time.Millisecond))

	// The senders: REST, not participants.
	sendTransport := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	t.Cleanup(sendTransport.CloseIdleConnections)
	sendHTTP := &http.Client{Transport: sendTransport, Timeout: 15 * time.Second}
	sent := &rrSent{byCode: map[int]int{}}
	sendCtx, stopSending := context.WithCancel(context.Background())
	var sendWG sync.WaitGroup
	stopAllSenders := func() {
		stopSending()
		sendWG.Wait()
	}
	t.Cleanup(stopAllSenders)
	for k := range rrSenders {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			rrSend(sendCtx, sendHTTP, k, urls, sent)
		}()
	}
	loadAt := time.Now()
	time.Sleep(2 * time.Second) // load before the first restart

	// Restart every node in turn while the load runs.
	for _, n := range nodes {
		old := n.proc
		termAt := time.Now()
		old.signal(t, syscall.SIGTERM)
		code := old.waitExit(t, 20*time.Second) // drain timeout 10 s
		exitedIn := time.Since(termAt)
		require.Equal(t, 0, code, "%s: SIGTERM exits 0: %v", old.name, old.waitErr)
		n.gen++
		n.proc = rrStart(t, bin, n, nodes)
		require.Eventually(t, func() bool { return rrReady(hc, nodes) }, 30*time.Second, 100*time.Millisecond,
			"%s did not become ready with 3 alive members", n.name())
		t.Logf("restarted %s as %s: exited %v after SIGTERM, cluster whole again after %v (at %v)",
			old.name, n.name(), exitedIn.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond),
			time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second) // load after the last restart
	stopAllSenders()
	loadFor := time.Since(loadAt)
	sent.mu.Lock()
	sendErr := sent.err
	sent.mu.Unlock()
	require.NoError(t, sendErr)

	// What each participant must get: every event of its session.
	expected := map[string]map[[2]int]bool{}
	total := 0
	for s := range rrSessions {
		want := map[[2]int]bool{}
		for k := range rrSenders {
			for _, n := range sent.n[k][s] {
				want[[2]int{k, n}] = true
				total++
			}
		}
		expected[rrSession(s)] = want
	}
	complete := func() bool {
		for _, p := range parts {
			p.mu.Lock()
			have := 0
			for key := range expected[p.session] {
				if p.distinct[key] > 0 {
					have++
				}
			}
			p.mu.Unlock()
			if have < len(expected[p.session]) {
				return false
			}
		}
		return true
	}
	waitAt := time.Now()
	assert.Eventually(t, complete, 30*time.Second, 100*time.Millisecond,
		"not every participant received every event of its session")
	t.Logf("deliveries complete %v after the load stopped", time.Since(waitAt).Round(time.Millisecond))
	// Where each participant lives now, for the diagnostics, while the
	// clients are still attached.
	homesNow := map[string]string{}
	for _, p := range parts {
		homesNow[p.id] = rrHomes(hc, nodes[0].url, p.session, p.id)
	}
	stopAllClients()
	close(runErrs)
	for err := range runErrs {
		t.Errorf("a client's Run ended with an error: %v", err)
	}

	// The verdict, participant by participant.
	checked, failing := 0, 0
	for _, p := range parts {
		var problems []string
		lastN := map[int]int{}
		var lastSeq uint64
		for _, d := range p.got {
			checked++
			if d.seq <= lastSeq {
				problems = append(problems, fmt.Sprintf("seq %d after %d (sender-%d-%d)", d.seq, lastSeq, d.sender, d.n))
			}
			lastSeq = d.seq
			if d.session != p.session {
				problems = append(problems, fmt.Sprintf("sender-%d-%d of session %s", d.sender, d.n, d.session))
			}
			if d.n <= lastN[d.sender] {
				problems = append(problems, fmt.Sprintf("sender-%d: event %d after %d (seq %d)", d.sender, d.n, lastN[d.sender], d.seq))
			}
			lastN[d.sender] = max(lastN[d.sender], d.n)
		}
		for key, times := range p.distinct {
			if times > 1 {
				problems = append(problems, fmt.Sprintf("sender-%d-%d received %d times", key[0], key[1], times))
			}
			if !expected[p.session][key] {
				problems = append(problems, fmt.Sprintf("sender-%d-%d received but never accepted", key[0], key[1]))
			}
		}
		var missing []string
		for key := range expected[p.session] {
			if p.distinct[key] == 0 {
				missing = append(missing, fmt.Sprintf("sender-%d-%d", key[0], key[1]))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			problems = append(problems, fmt.Sprintf("%d missing: %s", len(missing), rrFirst(missing, 10)))
		}
		for _, b := range p.bad {
			problems = append(problems, "bad frame: "+b)
		}
		if len(problems) > 0 {
			failing++
			if failing <= 10 {
				var ws []string
				for _, w := range p.welcomes {
					ws = append(ws, fmt.Sprintf("%v (%s) @%s seq=%d resumed=%v", w.at.Round(time.Millisecond),
						w.wall.UTC().Format("15:04:05.000"), w.node, w.seq, w.resumed))
				}
				t.Errorf("%s (session %s, batch %v): %d problems: %s\n  welcomes: %s\n  homes now (node/online): %s",
					p.id, p.session, p.batch, len(problems), rrFirst(problems, 8), strings.Join(ws, "; "),
					homesNow[p.id])
			}
		}
	}
	if failing > 10 {
		t.Errorf("… and %d more participants with problems", failing-10)
	}
	for _, s := range sent.short {
		t.Errorf("accepted with fewer than %d recipients: %s", rrParticipants/rrSessions, s)
	}
	if t.Failed() {
		for _, n := range nodes {
			t.Logf("%s: %s", n.name(), rrMetric(hc, n.url, "switchyard_handoffs_total"))
		}
	}
	sent.mu.Lock()
	t.Logf("load ran %v: %d events accepted (%.0f/s) by %d senders, %d retries (failed attempts by status, 0 = network: %v), "+
		"%d answers with fewer than 10 recipients, %d answers counting duplicates (an event reaching a moving participant by two routes, or a retry); %d deliveries checked over %d participants "+
		"(%d expected); %d participants with problems; whole test %v",
		loadFor.Round(time.Millisecond), total, float64(total)/loadFor.Seconds(), rrSenders, sent.retries.Load(), sent.byCode,
		len(sent.short), sent.dups, checked, rrParticipants, total*rrParticipants/rrSessions, failing, time.Since(start).Round(time.Millisecond))
	sent.mu.Unlock()
}

func rrFirst(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(", … (%d more)", len(items)-n)
}

// rrHomes lists, from node base's session view, the nodes participant is
// homed on and whether it is online there (diagnostics).
func rrHomes(hc *nodeClient, base, session, participant string) string {
	entries, err := hc.homesOf(base, session, participant)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s/%v", e.Node, e.Online))
	}
	return strings.Join(out, ", ")
}

// rrMetric returns the lines of a node's /metrics about one metric
// (diagnostics).
func rrMetric(hc *nodeClient, base, name string) string {
	resp, err := hc.http.Get(base + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, name) {
			out = append(out, line)
		}
	}
	return strings.Join(out, " ")
}
