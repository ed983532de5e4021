package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mpProcess is one `switchyard serve` process of the multi-process test.
type mpProcess struct {
	name       string
	gossipAddr string
	url        string
	cmd        *exec.Cmd
	logs       *mpLogSink
	exited     chan struct{} // closed once Wait returned
	waitErr    error
}

// mpLogSink collects a process's JSON log lines and reports the URL of its
// "serving" line.
type mpLogSink struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	serving chan string // gets the URL once
	sent    bool
}

func (s *mpLogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := string(s.partial[:i])
		s.partial = s.partial[i+1:]
		s.lines = append(s.lines, line)
		var rec struct {
			Msg string `json:"msg"`
			URL string `json:"url"`
		}
		if !s.sent && json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" && rec.URL != "" {
			s.sent = true
			s.serving <- rec.URL // buffered, one slot
		}
	}
	return len(p), nil
}

func (s *mpLogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n") + string(s.partial)
}

// mpFreePort returns a port free on 127.0.0.1 for both TCP and UDP (the
// gossip port takes both). The listeners are closed before the process
// binds it; nothing else on the host races for it in practice.
func mpFreePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = tl.Close()
		if err == nil {
			_ = ul.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP on 127.0.0.1")
	return 0
}

// mpBuild builds the real binary once for the test.
func mpBuild(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH; the multi-process test builds the binary with it")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// mpEnv is the test's environment without SWITCHYARD_ variables, which
// would configure the processes behind the test's back.
func mpEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHYARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// mpStart runs `switchyard serve` as node name on a free gossip port and
// waits for its "serving" log line. The process is killed (if still
// running) and waited for when the test ends.
func mpStart(t *testing.T, bin, name string, join string) *mpProcess {
	t.Helper()
	p := &mpProcess{
		name:       name,
		gossipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(mpFreePort(t))),
		logs:       &mpLogSink{serving: make(chan string, 1)},
		exited:     make(chan struct{}),
	}
	args := []string{"serve",
		"--listen", "127.0.0.1:0",
		"--gossip-bind", p.gossipAddr,
		"--node-name", name,
		"--log-format", "json",
		"--rejoin-interval", "500ms",
		"--forward-timeout", "1s",
		"--drain-timeout", "5s",
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = mpEnv()
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	require.NoError(t, p.cmd.Start())
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- log of %s (%v) ---\n%s", name, p.waitErr, p.logs.String())
		}
	})
	select {
	case p.url = <-p.logs.serving:
	case <-p.exited:
		t.Fatalf("%s exited before serving (%v):\n%s", name, p.waitErr, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not log msg=serving within 20s:\n%s", name, p.logs.String())
	}
	return p
}

// mpClient is the test's HTTP client (its own pool, closed at the end so no
// keep-alive goroutine outlives the test).
type mpClient struct{ http *http.Client }

func newMPClient(t *testing.T) *mpClient {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &mpClient{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

type mpAnswer struct {
	status int
	body   map[string]any
	raw    string
}

func (c *mpClient) submit(t *testing.T, base string, ev map[string]any) (mpAnswer, error) {
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	resp, err := c.http.Post(base+"/v1/gateway/events", "application/json", bytes.NewReader(b))
	if err != nil {
		return mpAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a := mpAnswer{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a, err
}

// members returns name → state from a node's members endpoint (nil when the
// node does not answer).
func (c *mpClient) members(base string) map[string]string {
	resp, err := c.http.Get(base + "/v1/gateway/members")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Members []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"members"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	out := map[string]string{}
	for _, m := range body.Members {
		out[m.Name] = m.State
	}
	return out
}

// homes lists the nodes a session view shows participant on.
func (c *mpClient) homes(base, session, participant string) []string {
	resp, err := c.http.Get(base + "/v1/gateway/sessions/" + url.PathEscape(session))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Participants []struct {
			ID   string `json:"participant_id"`
			Node string `json:"node"`
		} `json:"participants"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	var out []string
	for _, p := range body.Participants {
		if p.ID == participant {
			out = append(out, p.Node)
		}
	}
	return out
}

// mpWS is a participant attached over a real WebSocket.
type mpWS struct {
	t    *testing.T
	conn *websocket.Conn
}

func mpAttach(t *testing.T, base, participant, session string) *mpWS {
	t.Helper()
	return mpAttachQuery(t, base, url.Values{"participant_id": {participant}, "session_id": {session}})
}

func mpAttachQuery(t *testing.T, base string, q url.Values) *mpWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/gateway/ws?"+q.Encode(), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.CloseNow() })
	w := &mpWS{t: t, conn: c}
	require.Equal(t, "welcome", w.next()["type"])
	return w
}

func (w *mpWS) next() map[string]any {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := w.conn.Read(ctx)
	require.NoError(w.t, err)
	var f map[string]any
	require.NoError(w.t, json.Unmarshal(data, &f), "frame: %s", data)
	return f
}

// closeCode reads until the server closes the connection.
func (w *mpWS) closeCode() websocket.StatusCode {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		if _, _, err := w.conn.Read(ctx); err != nil {
			require.NoError(w.t, ctx.Err(), "the connection was not closed in time")
			return websocket.CloseStatus(err)
		}
	}
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
	start := time.Now()
	bin := mpBuild(t)
	t.Logf("built the binary in %v", time.Since(start).Round(time.Millisecond))

	p1 := mpStart(t, bin, "mp-1", "")
	p2 := mpStart(t, bin, "mp-2", p1.gossipAddr)
	p3 := mpStart(t, bin, "mp-3", p1.gossipAddr)
	procs := []*mpProcess{p1, p2, p3}
	hc := newMPClient(t)
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
	for _, w := range []*mpWS{alice, bob} {
		// Once: the frame after "first" is "second", not a duplicate.
		f := w.next()
		assert.Equal(t, "first", mpMessage(f))
		assert.Equal(t, float64(1), f["seq"])
		f = w.next()
		assert.Equal(t, "second", mpMessage(f))
		assert.Equal(t, float64(2), f["seq"])
	}

	// kill -9 node 3: nodes 1 and 2 stop routing to bob (memberlist LAN
	// defaults: failure detection takes several seconds).
	killedAt := time.Now()
	require.NoError(t, p3.cmd.Process.Signal(syscall.SIGKILL))
	<-p3.exited
	require.Eventually(t, func() bool {
		for _, p := range []*mpProcess{p1, p2} {
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
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, websocket.StatusGoingAway, alice.closeCode(), "a draining node closes WebSockets with 1001")
	select {
	case <-p1.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("node 1 did not exit within 15s of SIGTERM (drain timeout 5s)")
	}
	require.NotNil(t, p1.cmd.ProcessState)
	assert.Equal(t, 0, p1.cmd.ProcessState.ExitCode(), "SIGTERM exits 0: %v", p1.waitErr)
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
			homes := hc.homes(p2.url, "mp", "alice")
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
		f := alice2.next()
		assert.Equal(t, "after term", mpMessage(f), "%v", f)
		assert.Equal(t, float64(3), f["seq"], "%v", f)
	}
	state := hc.members(p2.url)["mp-1"]
	assert.Contains(t, []string{"left", ""}, state, "node 1 left gracefully, so node 2 lists it as left")
	t.Logf("SIGTERM: node 1 exited and node 2 routes nothing to it after %v", time.Since(termAt).Round(time.Millisecond))

}
