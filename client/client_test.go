package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchyard-gw/switchyard/client"
	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startNodes(t *testing.T, n int, cfg sidecar.Config) []*sidecar.Node {
	t.Helper()
	var nodes []*sidecar.Node
	for i := range n {
		c := cfg
		c.Listen, c.NodeName, c.Logger = "127.0.0.1:0", fmt.Sprint("n", i+1), testkit.Logger()
		gc := membership.GossipConfig{Bind: "127.0.0.1:0", Memberlist: testkit.FastGossip, RejoinInterval: time.Second}
		if i > 0 {
			gc.Join = []string{nodes[0].GossipAddr()}
		}
		c.Gossip = &gc
		node, err := sidecar.New(c)
		require.NoError(t, err)
		testkit.Start(t, node)
		nodes = append(nodes, node)
	}
	require.Eventually(t, func() bool {
		for _, node := range nodes {
			if !node.Settled() {
				return false
			}
			alive := 0
			for _, m := range node.Gateway().Members() {
				if m.State == membership.StateAlive {
					alive++
				}
			}
			if alive != n {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	return nodes
}

// submit posts one event, retrying a 502 with the same event_id as SPEC
// asks of a sender (a node draining or just gone answers it for a moment);
// it must end 200. It returns the last answer's body.
func submit(t *testing.T, url, session, sender, message string) string {
	t.Helper()
	body := fmt.Sprintf(`{"event_id":"%s-%s","sender_id":%q,"sender_type":"ai","event_type":"message","session_id":%q,"message":%q}`,
		sender, message, sender, session, message)
	for try := 0; ; try++ {
		resp, err := http.Post(url+"/v1/gateway/events", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusBadGateway && try < 20 {
			continue
		}
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		return string(b)
	}
}

// collector gathers the messages of event frames, checking seqs increase by one.
type collector struct {
	mu       sync.Mutex
	messages []string
	lastSeq  uint64
	err      error
	got      chan struct{}
	// answers, when a test fills them, are the submits' answers by
	// message, shown for the messages that did not arrive.
	answers map[string]string
	frames  []string // every frame handled, in short, shown on a failure
}

func newCollector() *collector {
	return &collector{got: make(chan struct{}, 1), answers: map[string]string{}}
}

func (c *collector) handle(f client.Frame) error {
	if f.Type != "event" {
		c.mu.Lock()
		c.frames = append(c.frames, string(f.Raw))
		c.mu.Unlock()
		return nil
	}
	var ev struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(f.Event, &ev)
	c.mu.Lock()
	c.frames = append(c.frames, fmt.Sprint("event ", f.Seq, " ", ev.Message))
	if c.lastSeq != 0 && f.Seq != c.lastSeq+1 && c.err == nil {
		c.err = fmt.Errorf("seq %d after %d", f.Seq, c.lastSeq)
	}
	c.lastSeq = f.Seq
	c.messages = append(c.messages, ev.Message)
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.messages)
}

// requireExactly checks that messages 1..n arrived once each, in order.
func (c *collector) requireExactly(t *testing.T, n int) {
	t.Helper()
	if !assert.Eventually(t, func() bool { return c.count() >= n }, 20*time.Second, 5*time.Millisecond) {
		c.mu.Lock()
		defer c.mu.Unlock()
		arrived := map[string]bool{}
		for _, m := range c.messages {
			arrived[m] = true
		}
		for i := 1; i <= n; i++ {
			if m := strconv.Itoa(i); !arrived[m] {
				t.Logf("missing %s, answered %s", m, c.answers[m])
			}
		}
		t.Fatalf("%d of %d events arrived (seq error: %v): %v\nframes: %q", len(c.messages), n, c.err, c.messages, c.frames)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	require.NoError(t, c.err)
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i + 1)
	}
	assert.Equal(t, want, c.messages)
}

func runClient(t *testing.T, cfg client.Config, col *collector) (*client.Client, func()) {
	t.Helper()
	cl, err := client.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx, col.handle) }()
	return cl, func() {
		cancel()
		require.NoError(t, <-done)
	}
}

func TestClientFollowsADrainToTheNextNodeWithoutLoss(t *testing.T) {
	nodes := startNodes(t, 3, sidecar.Config{})
	col := newCollector()
	_, stop := runClient(t, client.Config{URLs: []string{nodes[1].URL(), nodes[2].URL()}, ParticipantID: "bob",
		Sessions: []string{"s1"}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Batch: true, Ack: true}, col)
	defer stop()
	// A bound on gossip and an attach, not a figure under test: a loaded
	// 2-core machine took more than 5 s.
	require.Eventually(t, func() bool {
		return len(nodes[0].Gateway().Members()) == 3 && sessionHas(nodes[0], "s1", "bob")
	}, 30*time.Second, 5*time.Millisecond)

	const total = 300
	for i := 1; i <= total; i++ {
		answer := submit(t, nodes[0].URL(), "s1", "alice", strconv.Itoa(i))
		col.mu.Lock()
		col.answers[strconv.Itoa(i)] = answer
		col.mu.Unlock()
		if i == 100 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = nodes[1].Shutdown(ctx)
			}()
		}
	}
	col.requireExactly(t, total)
}

func sessionHas(n *sidecar.Node, session, participant string) bool {
	resp, err := http.Get(n.URL() + "/v1/gateway/sessions/" + session)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), `"participant_id":"`+participant+`"`)
}

// proxy is a loopback TCP proxy whose connections the test can cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(out, in); _ = out.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(in, out); _ = in.Close() }()
	}
}

// cut closes every proxied TCP connection, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func TestClientSurvivesRandomConnectionDrops(t *testing.T) {
	nodes := startNodes(t, 1, sidecar.Config{})
	px := newProxy(t, strings.TrimPrefix(nodes[0].URL(), "http://"))
	col := newCollector()
	_, stop := runClient(t, client.Config{URLs: []string{px.url()}, ParticipantID: "bob", Sessions: []string{"s1"},
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, col)
	defer stop()
	require.Eventually(t, func() bool { return sessionHas(nodes[0], "s1", "bob") }, 5*time.Second, 5*time.Millisecond)

	const total = 500
	for i := 1; i <= total; i++ {
		submit(t, nodes[0].URL(), "s1", "alice", strconv.Itoa(i))
		if i%50 == 0 {
			px.cut() // the TCP connection dies under the client
		}
	}
	col.requireExactly(t, total)
}

func TestClientSubmitsOverTheSocket(t *testing.T) {
	nodes := startNodes(t, 1, sidecar.Config{})
	bobCol, aliceCol := newCollector(), newCollector()
	_, stopBob := runClient(t, client.Config{URLs: []string{nodes[0].URL()}, ParticipantID: "bob", Sessions: []string{"s1"}}, bobCol)
	defer stopBob()
	alice, stopAlice := runClient(t, client.Config{URLs: []string{nodes[0].URL()}, ParticipantID: "alice",
		ParticipantType: "human", Sessions: []string{"s1"}}, aliceCol)
	defer stopAlice()
	require.Eventually(t, func() bool { return sessionHas(nodes[0], "s1", "alice") && sessionHas(nodes[0], "s1", "bob") },
		5*time.Second, 5*time.Millisecond)

	var res client.Result
	require.Eventually(t, func() bool {
		var err error
		res, err = alice.Submit(context.Background(), map[string]any{"event_type": "message", "message": "1", "session_id": "s1"})
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, http.StatusOK, res.Status)
	assert.Contains(t, string(res.Body), `"event_id"`)
	bobCol.requireExactly(t, 1)

	res, err := alice.Submit(context.Background(), map[string]any{"event_type": "message", "session_id": "nobody"})
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, res.Status)
}

func TestClientGivesUpOnABadCredential(t *testing.T) {
	nodes := startNodes(t, 1, sidecar.Config{APIKeys: []string{"k"}})
	cl, err := client.New(client.Config{URLs: []string{nodes[0].URL()}, ParticipantID: "bob", Credential: "wrong"})
	require.NoError(t, err)
	err = cl.Run(context.Background(), func(client.Frame) error { return nil })
	var perm *client.PermanentError
	require.ErrorAs(t, err, &perm)
	assert.Contains(t, err.Error(), "401")
}

func TestNewChecksConfig(t *testing.T) {
	_, err := client.New(client.Config{ParticipantID: "x"})
	assert.Error(t, err)
	_, err = client.New(client.Config{URLs: []string{"http://127.0.0.1:1"}})
	assert.Error(t, err)
}
