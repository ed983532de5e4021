package main

// The cluster scenario (docs/BENCHMARKS.md, "A cluster of N sidecars"):
// it starts N real `switchyard serve` processes on loopback, lets them
// converge, fills the directory with participants, and measures what a
// fleet pays for membership: idle CPU and RSS per node, attach → welcome
// latency (and whether a submit elsewhere right after the welcome ever
// misses), the latency and cluster-wide bytes of one join, the traffic of a
// rolling restart, and how long a dead node's participants answer 502.
//
// Cluster-wide bytes are what the nodes wrote to their TCP sockets, summed
// from each process's /proc/<pid>/io (wchar: HTTP between nodes, the
// answers to this tool, memberlist's push/pull; UDP gossip is sent with
// sendto and is not counted). The loopback interface's counters would count
// every other program on the machine too.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/switchyard-gw/switchyard/client"
)

// clusterOptions configure the cluster scenario.
type clusterOptions struct {
	bin          string        // the switchyard binary
	nodes        int           // N
	basePort     int           // node i serves HTTP on basePort+i and gossip on basePort+10000+i; 0: free ports
	participants int           // P, spread over the nodes
	sessionsPer  int           // S: sessions each participant is in
	bigSessions  int           // sessions of the one big agent
	idleWindow   time.Duration // how long idle CPU is measured
	attaches     int           // attach → welcome samples
	joins        int           // join samples (each for a small and for the big participant)
	agents       int           // reconnecting agents during the rolling restart
	skipRestart  bool
	restartNodes int    // how many nodes the rolling restart restarts (0: all)
	workDir      string // node logs
}

// clusterResult is the scenario's figures, one JSON line.
type clusterResult struct {
	Scenario          string  `json:"scenario"`
	Nodes             int     `json:"nodes"`
	Participants      int     `json:"participants"`
	SessionsPer       int     `json:"sessions_per_participant"`
	BigAgentSessions  int     `json:"big_agent_sessions"`
	ConvergeSeconds   float64 `json:"converge_s"`
	IdleCoresPerNode  float64 `json:"idle_cores_per_node"`
	IdleRSSMiBPerNode float64 `json:"idle_rss_mib_per_node"`
	IdleBytesPerSec   float64 `json:"idle_bytes_per_s"`
	PopulateSeconds   float64 `json:"populate_s"`
	PopulatePuts      int     `json:"populate_puts"`
	PopulateMiB       float64 `json:"populate_mib"`
	FullCoresPerNode  float64 `json:"full_idle_cores_per_node"`
	FullMaxCores      float64 `json:"full_idle_max_cores"`
	FullRSSMiBPerNode float64 `json:"full_rss_mib_per_node"`
	FullMaxRSSMiB     float64 `json:"full_max_rss_mib"`
	FullBytesPerSec   float64 `json:"full_idle_bytes_per_s"`
	AttachP50ms       float64 `json:"attach_welcome_p50_ms"`
	AttachP99ms       float64 `json:"attach_welcome_p99_ms"`
	AttachSubmit404s  int     `json:"attach_then_submit_404s"`
	AttachSubmitOther int     `json:"attach_then_submit_other_errors"`
	JoinSmallP50ms    float64 `json:"join_small_p50_ms"`
	JoinSmallP99ms    float64 `json:"join_small_p99_ms"`
	JoinSmallBytes    float64 `json:"join_small_bytes"`
	JoinBigP50ms      float64 `json:"join_big_p50_ms"`
	JoinBigP99ms      float64 `json:"join_big_p99_ms"`
	JoinBigBytes      float64 `json:"join_big_bytes"`
	RestartedNodes    int     `json:"restarted_nodes"`
	RestartSeconds    float64 `json:"restart_s"`
	RestartReqPerSec  float64 `json:"restart_requests_per_s"`
	RestartBytesPerS  float64 `json:"restart_bytes_per_s"`
	RestartAgentsLost int     `json:"restart_agents_missing_events"`
	DeathTo502Seconds float64 `json:"death_to_last_502_s"`
	Death502s         int     `json:"death_502s"`
}

// benchNode is one switchyard process of the scenario.
type benchNode struct {
	i          int
	port       int // HTTP
	gossipPort int
	url        string
	gossipAddr string
	cmd        *exec.Cmd
	exited     chan struct{}
	// requestsBefore counts the requests of earlier lives of this node (a
	// restart resets its counters).
	requestsBefore float64
	wroteBefore    float64 // bytes, likewise
}

func (n *benchNode) pid() string { return strconv.Itoa(n.cmd.Process.Pid) }

type fleet struct {
	o     clusterOptions
	nodes []*benchNode
	http  *http.Client
}

func runCluster(ctx context.Context, o clusterOptions) (res clusterResult, err error) {
	res = clusterResult{Scenario: "cluster", Nodes: o.nodes, Participants: o.participants,
		SessionsPer: o.sessionsPer, BigAgentSessions: o.bigSessions}
	if o.workDir == "" {
		if o.workDir, err = os.MkdirTemp("", "switchyard-cluster-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(o.workDir)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 4096, IdleConnTimeout: 30 * time.Second}
	f := &fleet{o: o, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	defer tr.CloseIdleConnections()
	defer f.stopAll()

	start := time.Now()
	if err := f.startAll(ctx); err != nil {
		return res, err
	}
	res.ConvergeSeconds = time.Since(start).Seconds()
	logf("cluster: %d nodes converged in %.1f s", o.nodes, res.ConvergeSeconds)

	idle := f.measureIdle(o.idleWindow)
	res.IdleCoresPerNode, res.IdleRSSMiBPerNode, res.IdleBytesPerSec = idle.meanCores, idle.meanRSSMiB, idle.bytesPerSec
	logf("cluster: idle %.4f cores, %.1f MiB per node", idle.meanCores, idle.meanRSSMiB)

	w0 := f.wrote()
	start = time.Now()
	puts, err := f.populate(ctx)
	if err != nil {
		return res, err
	}
	res.PopulateSeconds, res.PopulatePuts = time.Since(start).Seconds(), puts
	res.PopulateMiB = (f.wrote() - w0) / (1 << 20)
	if err := f.awaitDirectory(ctx); err != nil {
		return res, err
	}
	logf("cluster: %d participants in %.1f s (%d PUTs)", o.participants, res.PopulateSeconds, puts)

	full := f.measureIdle(o.idleWindow)
	res.FullCoresPerNode, res.FullMaxCores = full.meanCores, full.maxCores
	res.FullRSSMiBPerNode, res.FullMaxRSSMiB, res.FullBytesPerSec = full.meanRSSMiB, full.maxRSSMiB, full.bytesPerSec
	logf("cluster: with participants %.4f cores, %.1f MiB per node", full.meanCores, full.meanRSSMiB)

	lat, miss, other := f.attachThenSubmit(ctx, o.attaches)
	res.AttachP50ms, res.AttachP99ms = msAt(lat, 0.50), msAt(lat, 0.99)
	res.AttachSubmit404s, res.AttachSubmitOther = miss, other
	logf("cluster: attach → welcome p50 %.1f ms p99 %.1f ms, %d 404s", res.AttachP50ms, res.AttachP99ms, miss)

	small, smallBytes := f.joins(ctx, participantID(1), 1%o.nodes, "join-small", o.joins)
	big, bigBytes := f.joins(ctx, "agent-big", 0, "join-big", o.joins)
	res.JoinSmallP50ms, res.JoinSmallP99ms, res.JoinSmallBytes = msAt(small, 0.5), msAt(small, 0.99), smallBytes
	res.JoinBigP50ms, res.JoinBigP99ms, res.JoinBigBytes = msAt(big, 0.5), msAt(big, 0.99), bigBytes
	logf("cluster: join p50 %.1f ms (%.0f B) small, %.1f ms (%.0f B) big", res.JoinSmallP50ms, smallBytes, res.JoinBigP50ms, bigBytes)

	if !o.skipRestart {
		if err := f.rollingRestart(ctx, &res); err != nil {
			return res, err
		}
		logf("cluster: rolling restart in %.1f s, %.0f requests/s", res.RestartSeconds, res.RestartReqPerSec)
	}
	if o.nodes > 1 {
		if err := f.deathTo502(ctx, &res); err != nil {
			return res, err
		}
		logf("cluster: last 502 %.2f s after the kill", res.DeathTo502Seconds)
	}
	return res, nil
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// ---------------------------------------------------------------------------
// Processes.

func (f *fleet) startAll(ctx context.Context) error {
	first, err := f.start(ctx, 0, "")
	if err != nil {
		return err
	}
	f.nodes = append(f.nodes, first)
	// The rest join the first, a few at a time (each start costs a join).
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	rest := make([]*benchNode, f.o.nodes-1)
	for i := 1; i < f.o.nodes; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := f.start(ctx, i, first.gossipAddr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			rest[i-1] = n
		}()
	}
	wg.Wait()
	for _, n := range rest {
		if n != nil {
			f.nodes = append(f.nodes, n)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return f.awaitMembers(ctx, 2*time.Minute)
}

// start runs node i, joining the gossip address join unless it is empty,
// and waits until it is ready.
func (f *fleet) start(ctx context.Context, i int, join string) (*benchNode, error) {
	if f.o.basePort > 0 {
		return f.startOn(ctx, i, join, f.o.basePort+i, f.o.basePort+10000+i)
	}
	// Free ports: another program may take a port between our probe and
	// the node's bind, so a node that fails to start is tried on others.
	var err error
	for range 3 {
		var port, gport int
		if port, gport, err = freePorts(); err != nil {
			return nil, err
		}
		var n *benchNode
		if n, err = f.startOn(ctx, i, join, port, gport); err == nil {
			return n, nil
		}
	}
	return nil, err
}

// freePorts finds a free TCP port for HTTP and one free for both TCP and
// UDP for gossip, on 127.0.0.1.
func freePorts() (httpPort, gossipPort int, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	for range 20 {
		g, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		port := g.Addr().(*net.TCPAddr).Port
		u, uerr := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = g.Close()
		if uerr == nil {
			_ = u.Close()
			return l.Addr().(*net.TCPAddr).Port, port, nil
		}
	}
	return 0, 0, errors.New("no free gossip port found")
}

// startOn runs node i on the given ports; see start.
func (f *fleet) startOn(ctx context.Context, i int, join string, port, gport int) (*benchNode, error) {
	n := &benchNode{i: i, url: fmt.Sprintf("http://127.0.0.1:%d", port), gossipAddr: fmt.Sprintf("127.0.0.1:%d", gport),
		port: port, gossipPort: gport, exited: make(chan struct{})}
	args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--gossip-bind", n.gossipAddr,
		"--node-name", fmt.Sprintf("bench-%d", i), "--rate-limit", "-1", "--offline-ttl", "2h", "--mailbox-ttl", "2h",
		"--max-sessions-per-participant", strconv.Itoa(max(128, f.o.bigSessions+f.o.joins+16)), "--drain-timeout", "4s", "--log-level", "warn"}
	if join != "" {
		args = append(args, "--join", join)
	}
	logFile, err := os.OpenFile(filepath.Join(f.o.workDir, fmt.Sprintf("node-%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	n.cmd = exec.Command(f.o.bin, args...)
	n.cmd.Env = append(os.Environ(), "GOMAXPROCS=1") // as the injected sidecar runs
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	if err := n.cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start node %d: %w", i, err)
	}
	go func() { _ = n.cmd.Wait(); _ = logFile.Close(); close(n.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, _, _ := f.get(ctx, n.url+"/readyz"); code == http.StatusOK {
			return n, nil
		}
		select {
		case <-n.exited:
			return nil, fmt.Errorf("node %d exited at start (see %s)", i, f.o.workDir)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %d not ready within a minute", i)
		}
	}
}

// awaitMembers waits until every node lists every node alive.
func (f *fleet) awaitMembers(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, n := range f.nodes {
		for {
			var m struct {
				Members []struct{ State string } `json:"members"`
			}
			if code, body, _ := f.get(ctx, n.url+"/v1/gateway/members"); code == http.StatusOK && json.Unmarshal(body, &m) == nil {
				alive := 0
				for _, x := range m.Members {
					if x.State == "alive" {
						alive++
					}
				}
				if alive == len(f.nodes) {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %d does not see %d members alive", n.i, len(f.nodes))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (f *fleet) stopAll() {
	for _, n := range f.nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range f.nodes {
		select {
		case <-n.exited:
		case <-time.After(20 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	}
}

// ---------------------------------------------------------------------------
// Measurements.

type idleFigures struct {
	meanCores, maxCores   float64
	meanRSSMiB, maxRSSMiB float64
	bytesPerSec           float64 // written by all nodes
}

// measureIdle samples every node's CPU time and RSS over window.
func (f *fleet) measureIdle(window time.Duration) idleFigures {
	before := make([]procSample, len(f.nodes))
	for i, n := range f.nodes {
		before[i], _ = sampleProc(n.pid())
	}
	w0, t0 := f.wrote(), time.Now()
	time.Sleep(window) // the measuring window itself
	w1, t1 := f.wrote(), time.Now()
	var fig idleFigures
	for i, n := range f.nodes {
		s, _ := sampleProc(n.pid())
		cores := (s.cpu - before[i].cpu).Seconds() / s.taken.Sub(before[i].taken).Seconds()
		rss := float64(s.rss) / (1 << 20)
		fig.meanCores += cores / float64(len(f.nodes))
		fig.meanRSSMiB += rss / float64(len(f.nodes))
		fig.maxCores, fig.maxRSSMiB = max(fig.maxCores, cores), max(fig.maxRSSMiB, rss)
	}
	fig.bytesPerSec = (w1 - w0) / t1.Sub(t0).Seconds()
	return fig
}

// wrote is what node n has written so far in its current life (bytes,
// from /proc/<pid>/io's wchar).
func (n *benchNode) wrote() float64 {
	file, err := os.Open("/proc/" + n.pid() + "/io")
	if err != nil {
		return 0
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			w, _ := strconv.ParseFloat(v, 64)
			return w
		}
	}
	return 0
}

// wrote is what the running nodes have written so far in their lives.
func (f *fleet) wrote() float64 {
	total := 0.0
	for _, n := range f.nodes {
		total += n.wrote()
	}
	return total
}

func participantID(i int) string { return "p-" + strconv.Itoa(i) }

// sessionOf is participant i's j-th session: about four participants share
// each session, homed on different nodes.
func (f *fleet) sessionOf(i, j int) string {
	sessions := max(1, f.o.participants*f.o.sessionsPer/4)
	return "s-" + strconv.Itoa((i*f.o.sessionsPer+j)%sessions)
}

// populate creates the participants offline on their home nodes (node
// i mod N) with PUTs, and the big agent on node 0.
func (f *fleet) populate(ctx context.Context) (int, error) {
	type put struct{ node, participant, session string }
	work := make(chan put)
	var count atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				u := p.node + "/v1/gateway/sessions/" + url.PathEscape(p.session) + "/participants/" + url.PathEscape(p.participant)
				code, body, err := f.do(ctx, http.MethodPut, u, nil)
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("PUT %s answered %d: %s", u, code, body)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				count.Add(1)
			}
		}()
	}
	for i := range f.o.participants {
		for j := range f.o.sessionsPer {
			work <- put{f.nodes[i%len(f.nodes)].url, participantID(i), f.sessionOf(i, j)}
		}
	}
	for j := range f.o.bigSessions {
		work <- put{f.nodes[0].url, "agent-big", "big-" + strconv.Itoa(j)}
	}
	close(work)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return int(count.Load()), err
	}
	return int(count.Load()), nil
}

// awaitDirectory waits until the last node knows the last participant's
// sessions (the directory converged), at most two minutes.
func (f *fleet) awaitDirectory(ctx context.Context) error {
	last := f.o.participants - 1
	want := participantID(last)
	session := f.sessionOf(last, f.o.sessionsPer-1)
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range f.nodes {
		for {
			code, body, _ := f.get(ctx, n.url+"/v1/gateway/sessions/"+url.PathEscape(session))
			if code == http.StatusOK && bytes.Contains(body, []byte(`"`+want+`"`)) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %d did not learn %s in %s", n.i, want, session)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// attachThenSubmit attaches k new participants, each to a random node, and
// right after each welcome submits to it on another random node: the
// read-your-write promise says that submit never answers 404.
func (f *fleet) attachThenSubmit(ctx context.Context, k int) (lat []time.Duration, miss, other int) {
	for a := range k {
		home := f.nodes[rand.IntN(len(f.nodes))]
		elsewhere := f.nodes[rand.IntN(len(f.nodes))]
		if len(f.nodes) > 1 {
			for elsewhere == home {
				elsewhere = f.nodes[rand.IntN(len(f.nodes))]
			}
		}
		id, session := "att-"+strconv.Itoa(a), "att-s-"+strconv.Itoa(a)
		u := "ws" + strings.TrimPrefix(home.url, "http") + "/v1/gateway/ws?participant_id=" + id + "&session_id=" + session
		begin := time.Now()
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		conn, _, err := websocket.Dial(dctx, u, nil)
		if err != nil {
			cancel()
			other++
			continue
		}
		_, _, err = conn.Read(dctx) // the welcome
		cancel()
		if err != nil {
			_ = conn.CloseNow()
			other++
			continue
		}
		lat = append(lat, time.Since(begin))
		ev := fmt.Sprintf(`{"sender_id":"bench","sender_type":"ai","event_type":"message","session_id":%q,"recipient_id":%q}`, session, id)
		code, _, err := f.do(ctx, http.MethodPost, elsewhere.url+"/v1/gateway/events", []byte(ev))
		switch {
		case err != nil || (code != http.StatusOK && code != http.StatusNotFound):
			other++
		case code == http.StatusNotFound:
			miss++
		}
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	slices.Sort(lat)
	return lat, miss, other
}

// joins adds participant (homed on node home) to n new sessions, one after
// another, and returns the latencies and the bytes the nodes wrote per
// join (the PUT's answer included).
func (f *fleet) joins(ctx context.Context, participant string, home int, prefix string, n int) ([]time.Duration, float64) {
	var lat []time.Duration
	w0 := f.wrote()
	for j := range n {
		u := f.nodes[home].url + "/v1/gateway/sessions/" + prefix + "-" + strconv.Itoa(j) + "/participants/" + url.PathEscape(participant)
		begin := time.Now()
		if code, _, err := f.do(ctx, http.MethodPut, u, nil); err == nil && code == http.StatusOK {
			lat = append(lat, time.Since(begin))
		}
	}
	w1 := f.wrote()
	slices.Sort(lat)
	if len(lat) == 0 {
		return lat, 0
	}
	// Raw bytes: subtracting the idle rate would subtract push/pull bursts
	// that may or may not fall in the window (the idle rate is reported).
	return lat, (w1 - w0) / float64(len(lat))
}

// rollingRestart restarts every node in turn (SIGTERM, wait for its exit,
// start it again, wait until it is ready and seen by all) while agents
// attached with the Go client reconnect, and counts the cluster's requests
// and loopback bytes meanwhile. Every agent then gets one more event: one
// that does not is counted missing.
func (f *fleet) rollingRestart(ctx context.Context, res *clusterResult) error {
	actx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	urls := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		urls[i] = n.url
	}
	got := make([]atomic.Int64, f.o.agents)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopAgents()
	for a := range f.o.agents {
		// Each agent starts on another node, so every restart moves some.
		order := append(slices.Clone(urls[a%len(urls):]), urls[:a%len(urls)]...)
		c, err := client.New(client.Config{URLs: order, ParticipantID: "agent-" + strconv.Itoa(a),
			Sessions: []string{"agents"}, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Run(actx, func(fr client.Frame) error {
				if fr.Type == "event" {
					got[a].Add(1)
				}
				return nil
			})
			if err != nil && actx.Err() == nil { // the client gave up: say why
				logf("cluster: agent-%d stopped: %v", a, err)
			}
		}()
	}
	if err := f.awaitSession(ctx, "agents", f.o.agents); err != nil {
		return err
	}
	for _, n := range f.nodes {
		n.requestsBefore, n.wroteBefore = -f.requests(ctx, n), -n.wrote()
	}
	phase := time.Now()
	begin := phase
	restarts := len(f.nodes)
	if f.o.restartNodes > 0 {
		restarts = min(restarts, f.o.restartNodes)
	}
	res.RestartedNodes = restarts
	for i, n := range f.nodes[:restarts] {
		// This life's requests and bytes, but for those of its drain.
		n.requestsBefore += f.requests(ctx, n)
		n.wroteBefore += n.wrote()
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("node %d did not exit within 30 s of SIGTERM", n.i)
		}
		stopped := time.Now()
		fresh, err := f.startOn(ctx, n.i, f.nodes[(i+1)%len(f.nodes)].gossipAddr, n.port, n.gossipPort) // joins a node still running
		if err != nil {
			return err
		}
		ready := time.Now()
		fresh.requestsBefore, fresh.wroteBefore = n.requestsBefore, n.wroteBefore
		f.nodes[i] = fresh
		if err := f.awaitMembers(ctx, time.Minute); err != nil {
			return err
		}
		logf("cluster: restarted node %d: drained in %.1f s, ready in %.1f s, seen by all in %.1f s",
			n.i, stopped.Sub(begin).Seconds(), ready.Sub(stopped).Seconds(), time.Since(ready).Seconds())
		begin = time.Now()
	}
	res.RestartSeconds = time.Since(phase).Seconds()
	var requests, wrote float64
	for _, n := range f.nodes {
		requests += n.requestsBefore + f.requests(ctx, n)
		wrote += n.wroteBefore + n.wrote()
	}
	res.RestartReqPerSec = requests / res.RestartSeconds
	res.RestartBytesPerS = wrote / res.RestartSeconds

	// One event to all agents once they are back (or after a minute: an
	// agent that is not back is then counted as missing the event).
	if err := f.awaitSession(ctx, "agents", f.o.agents); err != nil {
		logf("cluster: after the restart: %v", err)
	}
	before := make([]int64, f.o.agents)
	for a := range before {
		before[a] = got[a].Load()
	}
	ev := `{"sender_id":"bench","sender_type":"ai","event_type":"message","session_id":"agents","message":"after the restart"}`
	if code, body, err := f.do(ctx, http.MethodPost, f.nodes[0].url+"/v1/gateway/events", []byte(ev)); err != nil || code != http.StatusOK {
		return fmt.Errorf("submit after the restart: %d %s %v", code, body, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for a := range before {
		for got[a].Load() == before[a] && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got[a].Load() == before[a] {
			res.RestartAgentsLost++
		}
	}
	return nil
}

// awaitSession waits until node 0 lists want online participants in session.
func (f *fleet) awaitSession(ctx context.Context, session string, want int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		online := 0
		var v struct {
			Participants []struct{ Online bool } `json:"participants"`
		}
		code, body, _ := f.get(ctx, f.nodes[0].url+"/v1/gateway/sessions/"+session)
		if code == http.StatusOK && json.Unmarshal(body, &v) == nil {
			online = 0
			for _, p := range v.Participants {
				if p.Online {
					online++
				}
			}
			if online >= want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session %s: %d of %d participants online after a minute (%s)", session, online, want, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requests is the number of HTTP requests node n served in its current
// life, from its request-duration histograms.
func (f *fleet) requests(ctx context.Context, n *benchNode) float64 {
	_, body, err := f.get(ctx, n.url+"/metrics")
	if err != nil {
		return 0
	}
	total := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "switchyard_http_request_duration_seconds_count") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			total += v
		}
	}
	return total
}

// deathTo502 kills the node hosting the most participants with SIGKILL
// while another node submits, every 10 ms, to sessions that hold one of its
// participants; it reports how long after the kill the last 502 came.
func (f *fleet) deathTo502(ctx context.Context, res *clusterResult) error {
	victim := f.busiest(ctx)
	submitter := f.nodes[0]
	if submitter == victim {
		submitter = f.nodes[1]
	}
	sessions := f.sessionsHostedBy(ctx, fmt.Sprintf("bench-%d", victim.i), 20)
	if len(sessions) == 0 {
		return errors.New("no session found with a participant on the node to kill")
	}
	_ = victim.cmd.Process.Kill()
	killed := time.Now()
	var last time.Time
	for k := 0; ; k++ {
		ev := fmt.Sprintf(`{"sender_id":"bench","sender_type":"ai","event_type":"message","session_id":%q}`, sessions[k%len(sessions)])
		code, _, _ := f.do(ctx, http.MethodPost, submitter.url+"/v1/gateway/events", []byte(ev))
		now := time.Now()
		if code == http.StatusBadGateway {
			last = now
			res.Death502s++
		}
		quietFor := now.Sub(killed)
		if !last.IsZero() {
			quietFor = now.Sub(last)
		}
		if quietFor > 10*time.Second || now.Sub(killed) > 2*time.Minute {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-victim.exited
	f.nodes = slices.DeleteFunc(f.nodes, func(n *benchNode) bool { return n == victim })
	if !last.IsZero() {
		res.DeathTo502Seconds = last.Sub(killed).Seconds()
	}
	return nil
}

// busiest is the node hosting the most participants, as node 0 sees it.
func (f *fleet) busiest(ctx context.Context) *benchNode {
	best, most := f.nodes[len(f.nodes)-1], -1
	var m struct {
		Members []struct {
			Name         string `json:"name"`
			Participants int    `json:"participants"`
		} `json:"members"`
	}
	if code, body, _ := f.get(ctx, f.nodes[0].url+"/v1/gateway/members"); code == http.StatusOK && json.Unmarshal(body, &m) == nil {
		for _, x := range m.Members {
			for _, n := range f.nodes {
				if x.Name == fmt.Sprintf("bench-%d", n.i) && x.Participants > most {
					best, most = n, x.Participants
				}
			}
		}
	}
	return best
}

// sessionsHostedBy finds up to k sessions, as node 0's directory has them,
// with a participant on node (participants move at a rolling restart, so
// the directory says where they are now).
func (f *fleet) sessionsHostedBy(ctx context.Context, node string, k int) []string {
	var out []string
	sessions := max(1, f.o.participants*f.o.sessionsPer/4)
	for s := 0; s < sessions && len(out) < k; s++ {
		var v struct {
			Participants []struct{ Node string } `json:"participants"`
		}
		code, body, _ := f.get(ctx, f.nodes[0].url+"/v1/gateway/sessions/s-"+strconv.Itoa(s))
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
			continue
		}
		on := false
		for _, p := range v.Participants {
			on = on || p.Node == node
		}
		if on {
			out = append(out, "s-"+strconv.Itoa(s))
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// HTTP.

func (f *fleet) get(ctx context.Context, u string) (int, []byte, error) {
	return f.do(ctx, http.MethodGet, u, nil)
}

func (f *fleet) do(ctx context.Context, method, u string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func msAt(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]) / float64(time.Millisecond)
}

func (r clusterResult) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "cluster\t%d nodes, %d participants × %d sessions, one agent in %d sessions (converged in %.1f s)\n",
		r.Nodes, r.Participants, r.SessionsPer, r.BigAgentSessions, r.ConvergeSeconds)
	fmt.Fprintf(tw, "idle, empty\t%.4f cores, %.1f MiB per node; nodes write %.0f B/s\n", r.IdleCoresPerNode, r.IdleRSSMiBPerNode, r.IdleBytesPerSec)
	fmt.Fprintf(tw, "populate\t%d PUTs in %.1f s, %.1f MiB written\n", r.PopulatePuts, r.PopulateSeconds, r.PopulateMiB)
	fmt.Fprintf(tw, "idle, full\t%.4f cores (max %.4f), %.1f MiB (max %.1f) per node; nodes write %.0f B/s\n",
		r.FullCoresPerNode, r.FullMaxCores, r.FullRSSMiBPerNode, r.FullMaxRSSMiB, r.FullBytesPerSec)
	fmt.Fprintf(tw, "attach → welcome\tp50 %.1f ms, p99 %.1f ms; submits elsewhere right after: %d × 404, %d other errors\n",
		r.AttachP50ms, r.AttachP99ms, r.AttachSubmit404s, r.AttachSubmitOther)
	fmt.Fprintf(tw, "join (10 sessions)\tp50 %.1f ms, p99 %.1f ms, %.0f B written per join\n", r.JoinSmallP50ms, r.JoinSmallP99ms, r.JoinSmallBytes)
	fmt.Fprintf(tw, "join (big agent)\tp50 %.1f ms, p99 %.1f ms, %.0f B written per join\n", r.JoinBigP50ms, r.JoinBigP99ms, r.JoinBigBytes)
	fmt.Fprintf(tw, "rolling restart\t%d nodes in %.1f s, %.0f requests/s, %.0f B/s written, %d agents missed the event after it\n",
		r.RestartedNodes, r.RestartSeconds, r.RestartReqPerSec, r.RestartBytesPerS, r.RestartAgentsLost)
	fmt.Fprintf(tw, "node death\tlast 502 %.2f s after the kill (%d × 502)\n", r.DeathTo502Seconds, r.Death502s)
	_ = tw.Flush()
}
