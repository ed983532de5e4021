package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/membership"
)

// faultNet is the network the partition test controls: the gossip
// addresses in cut are isolated from every other address.
type faultNet struct {
	mu  sync.RWMutex
	cut map[string]bool
}

func newFaultNet() *faultNet { return &faultNet{cut: map[string]bool{}} }

func (f *faultNet) setCut(addr string, cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[addr] = cut
}

func (f *faultNet) isCut(addr string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cut[addr]
}

// blocked reports whether traffic between gossip addresses a and b is lost.
func (f *faultNet) blocked(a, b string) bool {
	return a != b && (f.isCut(a) || f.isCut(b))
}

// faultTransport wraps memberlist's UDP/TCP transport. While its node, or
// the peer, is cut off, outgoing packets are dropped, stream dials are
// refused, and incoming packets from cut-off peers are filtered. Incoming
// streams cannot be told apart by source on loopback (the source port is
// ephemeral), so a cut-off node refuses all of them and the others rely on
// the cut-off node's own transport refusing to dial: every node of the test
// runs this transport.
type faultTransport struct {
	inner    *memberlist.NetTransport
	self     string // 127.0.0.1:port, the address peers know this node by
	net      *faultNet
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	stopping  chan struct{} // Shutdown began: discard instead of relaying
	innerDone chan struct{} // the inner transport has stopped
	wg        sync.WaitGroup
	once      sync.Once
	shutErr   error

	dropped atomic.Int64 // packets and streams lost to the cut
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

func newFaultTransport(t testing.TB, fn *faultNet) *faultTransport {
	t.Helper()
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, BindPort: 0, Logger: log.New(io.Discard, "", 0)})
	require.NoError(t, err)
	ft := &faultTransport{
		inner:     inner,
		self:      net.JoinHostPort("127.0.0.1", strconv.Itoa(inner.GetAutoBindPort())),
		net:       fn,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		stopping:  make(chan struct{}),
		innerDone: make(chan struct{}),
	}
	ft.wg.Add(2)
	go ft.relayPackets()
	go ft.relayStreams()
	// memberlist shuts its transport down; this covers a node that never
	// took it. Shutdown is idempotent.
	t.Cleanup(func() { _ = ft.Shutdown() })
	return ft
}

func (ft *faultTransport) relayPackets() {
	defer ft.wg.Done()
	for {
		select {
		case p := <-ft.inner.PacketCh():
			if ft.net.blocked(ft.self, p.From.String()) {
				ft.dropped.Add(1)
				continue
			}
			select {
			case ft.packetCh <- p:
			case <-ft.stopping: // memberlist may have stopped reading
			}
		case <-ft.innerDone:
			return
		}
	}
}

func (ft *faultTransport) relayStreams() {
	defer ft.wg.Done()
	for {
		select {
		case c := <-ft.inner.StreamCh():
			if ft.net.isCut(ft.self) {
				ft.dropped.Add(1)
				_ = c.Close()
				continue
			}
			select {
			case ft.streamCh <- c:
			case <-ft.stopping:
				_ = c.Close()
			}
		case <-ft.innerDone:
			return
		}
	}
}

func (ft *faultTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return ft.inner.FinalAdvertiseAddr(ip, port)
}

func (ft *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if ft.net.blocked(ft.self, addr) {
		ft.dropped.Add(1)
		return time.Now(), nil // lost on the way, as UDP is
	}
	return ft.inner.WriteTo(b, addr)
}

func (ft *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if ft.net.blocked(ft.self, a.Addr) {
		ft.dropped.Add(1)
		return time.Now(), nil
	}
	return ft.inner.WriteToAddress(b, a)
}

func (ft *faultTransport) PacketCh() <-chan *memberlist.Packet { return ft.packetCh }

func (ft *faultTransport) StreamCh() <-chan net.Conn { return ft.streamCh }

var errPartitioned = errors.New("connection refused: the test cut this node off")

func (ft *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if ft.net.blocked(ft.self, addr) {
		ft.dropped.Add(1)
		return nil, fmt.Errorf("dial %s: %w", addr, errPartitioned)
	}
	return ft.inner.DialTimeout(addr, timeout)
}

func (ft *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if ft.net.blocked(ft.self, a.Addr) {
		ft.dropped.Add(1)
		return nil, fmt.Errorf("dial %s: %w", a.Addr, errPartitioned)
	}
	return ft.inner.DialAddressTimeout(a, timeout)
}

// Shutdown stops the inner transport while the relays keep draining it (its
// listeners block until their packet or stream is taken), then stops the
// relays.
func (ft *faultTransport) Shutdown() error {
	ft.once.Do(func() {
		close(ft.stopping)
		ft.shutErr = ft.inner.Shutdown()
		close(ft.innerDone)
		ft.wg.Wait()
	})
	return ft.shutErr
}

// cutProxy fronts a node's HTTP listener on loopback. While cut, it refuses
// new connections and has closed the ones it carried, so peers' deliveries
// and directory pushes to that node fail as they would across a partition.
type cutProxy struct {
	ln     net.Listener
	target atomic.Value // string: the node's listener address, set after New

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t testing.TB) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		target, _ := p.target.Load().(string)
		if target == "" || !p.track(c) {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.pipe(c, target)
	}
}

func (p *cutProxy) pipe(down net.Conn, target string) {
	defer p.wg.Done()
	defer p.untrack(down)
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		_ = down.Close()
		return
	}
	defer p.untrack(up)
	if !p.track(up) {
		_ = up.Close()
		_ = down.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, down)
		_ = up.Close()
		_ = down.Close()
	}()
	_, _ = io.Copy(down, up)
	_ = down.Close()
	_ = up.Close()
	<-done
}

// track registers c, unless the proxy is cut or closed.
func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *cutProxy) closeAllLocked() {
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		p.closeAllLocked()
	}
}

func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.closeAllLocked()
	p.mu.Unlock()
	p.wg.Wait()
}

// partitionNode is one node of the partition test with its faults.
type partitionNode struct {
	*Node
	transport *faultTransport
	proxy     *cutProxy
}

// direct is the node's own listener, bypassing its proxy: the test's own
// requests and WebSockets are never cut.
func (pn partitionNode) direct() string { return "http://" + pn.Addr().String() }

// attachDirect attaches participant to the node's own listener and returns
// the client after its welcome.
func (pn partitionNode) attachDirect(t testing.TB, participant string, sessions ...string) *client {
	t.Helper()
	q := url.Values{"participant_id": {participant}, "session_id": sessions}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+pn.Addr().String()+wsPath+"?"+q.Encode(), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	c.SetReadLimit(-1)
	t.Cleanup(func() { _ = c.CloseNow() })
	cl := &client{t: t, conn: c}
	require.Equal(t, "welcome", cl.next()["type"])
	return cl
}

// partitionClient talks to nodes with a bounded timeout: a submit that
// hangs fails the test instead of stalling it.
type partitionClient struct {
	http *http.Client
}

func newPartitionClient(t testing.TB) *partitionClient {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &partitionClient{http: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
}

type partitionAnswer struct {
	status  int
	body    map[string]any
	raw     string
	elapsed time.Duration
	err     error
}

func (pc *partitionClient) submit(base string, ev map[string]any) partitionAnswer {
	b, _ := json.Marshal(ev)
	start := time.Now()
	resp, err := pc.http.Post(base+"/v1/gateway/events", "application/json", bytes.NewReader(b))
	if err != nil {
		return partitionAnswer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a := partitionAnswer{status: resp.StatusCode, raw: string(raw), elapsed: time.Since(start), err: err}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// memberStates returns name → state from a node's members endpoint.
func (pc *partitionClient) memberStates(base string) map[string]string {
	resp, err := pc.http.Get(base + "/v1/gateway/members")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Members []membership.Member `json:"members"`
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
		px := newCutProxy(t) // before the node: its URL is the node's advertised URL
		gc := membership.GossipConfig{Bind: tr.self, Transport: tr, Memberlist: fastGossip,
			RejoinInterval: 300 * time.Millisecond, SyncTimeout: 500 * time.Millisecond}
		if i > 0 {
			gc.Join = []string{nodes[0].transport.self}
		}
		n := startNode(t, Config{NodeName: fmt.Sprintf("node-%d", i+1), AdvertiseURL: px.URL(), Gossip: &gc,
			ForwardTimeout: forwardTimeout, PeerAttemptTimeout: 300 * time.Millisecond})
		px.target.Store(n.Addr().String())
		nodes = append(nodes, partitionNode{Node: n, transport: tr, proxy: px})
	}
	waitMembers(t, []*Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	pc := newPartitionClient(t)

	bob := n3.attachDirect(t, "bob", "part")
	alice := n1.attachDirect(t, "alice", "part")
	a := pc.submit(n1.direct(), partitionToBob("before"))
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, a.raw)
	require.Equal(t, "before", bob.next()["event"].(map[string]any)["message"])

	// Cut node 3 off: gossip both ways, and HTTP into it.
	fnet.setCut(n3.transport.self, true)
	n3.proxy.setCut(true)
	cutAt := time.Now()

	cutSubmits := 0
	var statuses sync.Map // status → count, for the log
	require.Eventually(t, func() bool {
		cutSubmits++
		msg := fmt.Sprint("cut-", cutSubmits)
		for _, n := range []partitionNode{n1, n2} {
			a := pc.submit(n.direct(), partitionToBob(msg))
			if !assert.NoError(t, a.err) {
				return false
			}
			assert.Less(t, a.elapsed, forwardTimeout+2*time.Second, "a submit hung past the forward deadline")
			v, _ := statuses.LoadOrStore(a.status, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			switch a.status {
			case http.StatusBadGateway:
				assert.Equal(t, "recipients_unreachable", a.body["code"], a.raw)
				assert.Equal(t, []any{"bob"}, a.body["failed"], a.raw)
				return false
			case http.StatusNotFound:
				assert.Equal(t, "recipient_not_found", a.body["code"], a.raw)
			default:
				assert.Failf(t, "a cut-off node was reached", "%s answered %d while node 3 was cut off: %s",
					n.Name(), a.status, a.raw)
				return false
			}
		}
		// Both say node 3 is dead, and node 3 says both others are.
		return pc.memberStates(n1.direct())["node-3"] == membership.StateDead &&
			pc.memberStates(n2.direct())["node-3"] == membership.StateDead &&
			pc.memberStates(n3.direct())["node-1"] == membership.StateDead &&
			pc.memberStates(n3.direct())["node-2"] == membership.StateDead
	}, 10*time.Second, 20*time.Millisecond, "the peers kept routing to a cut-off node")
	t.Logf("node 3 dropped by its peers %v after the cut; answers while cut: %v",
		time.Since(cutAt).Round(time.Millisecond), partitionStatusCounts(&statuses))
	assert.Positive(t, n3.transport.dropped.Load(), "the cut lost no packet: the fault was not injected")

	// Heal. Nothing is restarted.
	fnet.setCut(n3.transport.self, false)
	n3.proxy.setCut(false)
	healAt := time.Now()
	var delivered string
	attempts := 0
	require.Eventually(t, func() bool {
		attempts++
		msg := fmt.Sprint("heal-", attempts)
		a := pc.submit(n1.direct(), partitionToBob(msg))
		if !assert.NoError(t, a.err) {
			return false
		}
		assert.Contains(t, []int{http.StatusOK, http.StatusNotFound, http.StatusBadGateway}, a.status, a.raw)
		if a.status == http.StatusOK {
			delivered = msg
			return true
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "node 1 never routed to bob again after the partition healed")
	t.Logf("node 1 routes to bob again %v after healing (%d attempts)", time.Since(healAt).Round(time.Millisecond), attempts)

	// bob gets it; nothing submitted while cut ever arrives.
	for {
		f := bob.next()
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
		a := pc.submit(n3.direct(), map[string]any{"sender_id": "bob", "sender_type": "ai", "event_type": "message",
			"message": "from node 3", "recipient_id": "alice"})
		return a.err == nil && a.status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "node 3 never routed to alice on node 1 again")
	require.Equal(t, "from node 3", alice.next()["event"].(map[string]any)["message"])
	require.Eventually(t, func() bool {
		return pc.submit(n2.direct(), partitionToBob("via node 2")).status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "node 2 never routed to bob again")
	require.Equal(t, "via node 2", bob.next()["event"].(map[string]any)["message"])
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
