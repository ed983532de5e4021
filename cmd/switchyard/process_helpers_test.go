package main

// Helpers for the tests that run real `switchyard serve` processes
// (multiprocess_test.go, rolling_test.go): building the binary, starting a
// process and waiting until it serves, collecting its logs, stopping it,
// and asking it over HTTP.

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildBinary builds the real binary once for the test.
func buildBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH; the test builds the binary with it")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	start := time.Now()
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	t.Logf("built the binary in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// freePort returns a port free on 127.0.0.1 for both TCP and UDP (the
// gossip port takes both). The listeners are closed before the process
// binds it; nothing else on the host races for it in practice.
func freePort(t *testing.T) int {
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

// envWithoutSwitchyard is the test's environment without SWITCHYARD_
// variables, which would configure the processes behind the test's back.
func envWithoutSwitchyard() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHYARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// logSink collects a process's JSON log lines and reports the URL of its
// "serving" line.
type logSink struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	serving chan string // gets the URL once
	sent    bool
}

func (s *logSink) Write(p []byte) (int, error) {
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

// String is everything logged so far.
func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n") + string(s.partial)
}

// serveConfig is what differs between the `switchyard serve` processes the
// tests start. Every process logs JSON (its "serving" line tells it is up)
// and runs without SWITCHYARD_ variables.
type serveConfig struct {
	name       string   // --node-name
	listen     string   // --listen; "": 127.0.0.1:0
	gossipAddr string   // --gossip-bind; "": a free port on 127.0.0.1
	join       []string // a --join flag each
	flags      []string // further flags
}

// process is one `switchyard serve` process.
type process struct {
	name       string
	gossipAddr string
	url        string // from the "serving" log line
	cmd        *exec.Cmd
	logs       *logSink
	exited     chan struct{} // closed once Wait returned
	waitErr    error
}

// startServe runs `switchyard serve` as cfg says and waits for its
// "serving" log line. The process is killed (if still running) and waited
// for when the test ends, and its log is printed if the test failed.
func startServe(t *testing.T, bin string, cfg serveConfig) *process {
	t.Helper()
	if cfg.listen == "" {
		cfg.listen = "127.0.0.1:0"
	}
	if cfg.gossipAddr == "" {
		cfg.gossipAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	}
	p := &process{
		name:       cfg.name,
		gossipAddr: cfg.gossipAddr,
		logs:       &logSink{serving: make(chan string, 1)},
		exited:     make(chan struct{}),
	}
	args := []string{"serve",
		"--listen", cfg.listen,
		"--gossip-bind", cfg.gossipAddr,
		"--node-name", cfg.name,
		"--log-format", "json",
	}
	args = append(args, cfg.flags...)
	for _, j := range cfg.join {
		args = append(args, "--join", j)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = envWithoutSwitchyard()
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
			t.Logf("--- log of %s (%v) ---\n%s", p.name, p.waitErr, p.logs.String())
		}
	})
	select {
	case p.url = <-p.logs.serving:
	case <-p.exited:
		t.Fatalf("%s exited before serving (%v):\n%s", p.name, p.waitErr, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not log msg=serving within 20s:\n%s", p.name, p.logs.String())
	}
	return p
}

// signal sends sig (SIGTERM, SIGKILL) to the process.
func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signalling %s", p.name)
}

// waitExit waits for the process to exit, failing the test if it has not
// within, and returns its exit code.
func (p *process) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v", p.name, within)
	}
	require.NotNil(t, p.cmd.ProcessState)
	return p.cmd.ProcessState.ExitCode()
}

// nodeClient is the test's HTTP client for the processes (its own pool,
// closed at the end so no keep-alive goroutine outlives the test).
type nodeClient struct{ http *http.Client }

func newNodeClient(t *testing.T) *nodeClient {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &nodeClient{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// eventAnswer is a node's answer to POST /v1/gateway/events.
type eventAnswer struct {
	status int // 0 when the request failed
	body   map[string]any
	raw    string
}

// count reads a number of the answer (recipients, duplicates, …).
func (a eventAnswer) count(key string) int {
	f, _ := a.body[key].(float64)
	return int(f)
}

// postEvent posts the JSON event body to base's events endpoint with hc.
// It never calls require, so senders running in goroutines may use it.
func postEvent(hc *http.Client, base string, body []byte) (eventAnswer, error) {
	resp, err := hc.Post(base+"/v1/gateway/events", "application/json", bytes.NewReader(body))
	if err != nil {
		return eventAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a := eventAnswer{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a, err
}

// submit posts the event ev to base.
func (c *nodeClient) submit(t *testing.T, base string, ev map[string]any) (eventAnswer, error) {
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	return postEvent(c.http, base, b)
}

// members returns name → state from a node's members endpoint (nil when the
// node does not answer).
func (c *nodeClient) members(base string) map[string]string {
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

// sessionEntry is one participant entry of a session view.
type sessionEntry struct {
	ID     string `json:"participant_id"`
	Node   string `json:"node"`
	Online bool   `json:"online"`
}

// homesOf returns the entries of participant in base's view of session.
func (c *nodeClient) homesOf(base, session, participant string) ([]sessionEntry, error) {
	resp, err := c.http.Get(base + "/v1/gateway/sessions/" + url.PathEscape(session))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Participants []sessionEntry `json:"participants"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var out []sessionEntry
	for _, p := range body.Participants {
		if p.ID == participant {
			out = append(out, p)
		}
	}
	return out, nil
}
