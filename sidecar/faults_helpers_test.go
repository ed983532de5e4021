package sidecar

// Fault injection shared by the cluster fault tests (cluster_faults_test.go)
// and the partition test (partition_test.go): a memberlist transport that
// loses gossip, a loopback reverse proxy in front of a node's HTTP listener
// that fails, holds or cuts what peers send it, and request helpers that
// never call require.

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
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
)

// ---------------------------------------------------------------------------
// Gossip faults.

// faultNet is a network a test controls: the gossip addresses in cut are
// isolated from every other address.
type faultNet struct {
	mu  sync.RWMutex
	cut map[string]bool
}

func newFaultNet() *faultNet { return &faultNet{cut: map[string]bool{}} }

// setCut cuts the gossip address addr off (cut true) or heals it.
func (f *faultNet) setCut(addr string, cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[addr] = cut
}

// isCut reports whether addr is cut off.
func (f *faultNet) isCut(addr string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cut[addr]
}

// blocked reports whether traffic between gossip addresses a and b is lost.
func (f *faultNet) blocked(a, b string) bool {
	return a != b && (f.isCut(a) || f.isCut(b))
}

// faultTransport wraps memberlist's UDP/TCP transport, bound to a free port
// on 127.0.0.1 (addr: give it as GossipConfig.Bind with the transport), and
// loses traffic in two ways:
//
//   - kill: from then on it sends nothing (writes are lost, as UDP loses
//     them), dials nothing and hears nothing, as a process killed with -9
//     would. Node.Shutdown still works on it (Leave "sends" into the void),
//     so startNode's cleanup shuts the node down.
//   - a cut in its faultNet, when it has one: while its node, or the peer,
//     is cut off, outgoing packets are dropped, stream dials are refused,
//     and incoming packets from cut-off peers are filtered. Incoming streams
//     cannot be told apart by source on loopback (the source port is
//     ephemeral), so a cut-off node refuses all of them and the others rely
//     on the cut-off node's own transport refusing to dial: every node of a
//     partition test runs this transport.
type faultTransport struct {
	inner    *memberlist.NetTransport
	addr     string    // 127.0.0.1:port, the address peers know this node by
	net      *faultNet // nil: no cuts, only kill
	killed   atomic.Bool
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	stopping  chan struct{} // Shutdown began: discard instead of relaying
	innerDone chan struct{} // the inner transport has stopped
	wg        sync.WaitGroup
	once      sync.Once
	shutErr   error

	dropped atomic.Int64 // packets and streams lost to a fault
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

var (
	errKilledNode  = errors.New("the test killed this node")
	errPartitioned = errors.New("connection refused: the test cut this node off")
)

// newFaultTransport listens on a free loopback port; fn, when not nil, is
// the network whose cuts it obeys.
func newFaultTransport(t testing.TB, fn *faultNet) *faultTransport {
	t.Helper()
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, BindPort: 0, Logger: log.New(io.Discard, "", 0)})
	require.NoError(t, err)
	ft := &faultTransport{
		inner:     inner,
		addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(inner.GetAutoBindPort())),
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

// kill makes the node deaf and mute for good, as kill -9 would.
func (ft *faultTransport) kill() { ft.killed.Store(true) }

// lost reports whether traffic between this node and peer is lost now.
func (ft *faultTransport) lost(peer string) bool {
	return ft.killed.Load() || (ft.net != nil && ft.net.blocked(ft.addr, peer))
}

// refusesStreams reports whether incoming streams, whatever their source,
// are refused now.
func (ft *faultTransport) refusesStreams() bool {
	return ft.killed.Load() || (ft.net != nil && ft.net.isCut(ft.addr))
}

// dialError is the error of a dial to addr that a fault refuses.
func (ft *faultTransport) dialError(addr string) error {
	ft.dropped.Add(1)
	if ft.killed.Load() {
		return errKilledNode
	}
	return fmt.Errorf("dial %s: %w", addr, errPartitioned)
}

func (ft *faultTransport) relayPackets() {
	defer ft.wg.Done()
	for {
		select {
		case p := <-ft.inner.PacketCh():
			if ft.lost(p.From.String()) {
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
			if ft.refusesStreams() {
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
	if ft.lost(addr) {
		ft.dropped.Add(1)
		return time.Now(), nil // lost on the way, as UDP is
	}
	return ft.inner.WriteTo(b, addr)
}

func (ft *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if ft.lost(a.Addr) {
		ft.dropped.Add(1)
		return time.Now(), nil
	}
	return ft.inner.WriteToAddress(b, a)
}

func (ft *faultTransport) PacketCh() <-chan *memberlist.Packet { return ft.packetCh }

func (ft *faultTransport) StreamCh() <-chan net.Conn { return ft.streamCh }

func (ft *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if ft.lost(addr) {
		return nil, ft.dialError(addr)
	}
	return ft.inner.DialTimeout(addr, timeout)
}

func (ft *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if ft.lost(a.Addr) {
		return nil, ft.dialError(a.Addr)
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

// ---------------------------------------------------------------------------
// HTTP faults.

// deliveryFault is what a faultProxy does to the deliveries it receives.
type deliveryFault int32

const (
	deliveriesPass  deliveryFault = iota // deliveries pass through
	deliveriesFail                       // deliveries are answered 500
	deliveriesHang                       // deliveries are held until the caller gives up
	deliveriesReset                      // a delivery's connection is closed without an answer
	deliveriesGate                       // deliveries are held until releaseGate, then pass
)

// seenDelivery is one delivery request a faultProxy received.
type seenDelivery struct {
	header http.Header
	body   map[string]any
}

// faultProxy is a loopback reverse proxy in front of a node, used as the
// node's AdvertiseURL, so every peer reaches the node through it. It
// injects three kinds of fault:
//
//   - setMode faults POST /v1/gateway/deliveries only (it answers 500,
//     holds, resets or gates them); directory pushes, WebSocket attaches and
//     the other endpoints always pass.
//   - down closes the listener and every connection the proxy carries but
//     hijacked ones (WebSockets): the node is unreachable for its peers
//     until up listens again on the same address.
//   - setCut(true) keeps listening but closes every connection the proxy
//     carries, WebSockets too, and each new one at once, until
//     setCut(false): the node is across a partition.
type faultProxy struct {
	addr   string
	ready  chan struct{} // closed once the target is known
	target atomic.Pointer[url.URL]
	mode   atomic.Int32
	rp     *httputil.ReverseProxy
	tr     *http.Transport
	stop   chan struct{} // closed at cleanup: held requests return

	arrived     chan struct{} // a gated delivery arrived
	release     chan struct{} // closed: gated deliveries pass
	releaseOnce sync.Once

	deliveries atomic.Int64 // delivery requests received
	// Directory pushes of changes (kind u) received, and their body bytes:
	// counted as they arrive, so a push the sender saw answered is
	// counted.
	pushes, pushBytes atomic.Int64
	inflight          atomic.Int64 // delivery requests being handled

	mu   sync.Mutex
	srv  *http.Server
	seen []seenDelivery
	wg   sync.WaitGroup

	releaseCuts  atomic.Int64 // release answers still to cut halfway
	releasesCut  atomic.Int64 // release answers cut so far
	failConfirms atomic.Bool  // a release's confirm is answered 500, never reaching the node

	connMu sync.Mutex // not mu: http.Server.Close, called under mu, closes tracked conns
	cut    bool
	conns  map[*trackedConn]struct{}
}

// newFaultProxy listens on a free loopback port. Call setTarget once the
// node it fronts exists; until then requests wait.
func newFaultProxy(t testing.TB) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{
		addr:    ln.Addr().String(),
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
		arrived: make(chan struct{}, 16),
		release: make(chan struct{}),
		tr:      &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64},
		conns:   map[*trackedConn]struct{}{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(p.target.Load()) },
		Transport: p.tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	p.serve(ln)
	t.Cleanup(p.shutdown)
	return p
}

// URL is the proxy's base URL, to be the node's AdvertiseURL.
func (p *faultProxy) URL() string { return "http://" + p.addr }

// setTarget points the proxy at n's own listener; requests waiting for it
// go on.
func (p *faultProxy) setTarget(n *Node) {
	p.target.Store(&url.URL{Scheme: "http", Host: n.Addr().String()})
	close(p.ready)
}

// setMode sets what happens to the deliveries received from now on.
func (p *faultProxy) setMode(m deliveryFault) { p.mode.Store(int32(m)) }

// releaseGate lets held deliveries (and later ones) through.
func (p *faultProxy) releaseGate() {
	p.setMode(deliveriesPass)
	p.releaseOnce.Do(func() { close(p.release) })
}

func (p *faultProxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = srv.Serve(cutListener{Listener: ln, p: p})
	}()
}

// down closes the listener and every connection the proxy carries but
// hijacked ones (WebSockets): the node is unreachable for its peers.
func (p *faultProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		_ = p.srv.Close()
		p.srv = nil
	}
}

// up listens again on the same address after down.
func (p *faultProxy) up(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(t, err, "listening again on the proxy's address")
	p.serve(ln)
}

// setCut cuts the node off (cut true: every connection the proxy carries is
// closed, and new ones are closed as they come) or heals the cut.
func (p *faultProxy) setCut(cut bool) {
	p.connMu.Lock()
	p.cut = cut
	p.connMu.Unlock()
	if cut {
		p.closeConns()
	}
}

// closeConns closes every connection the proxy carries, hijacked ones too.
func (p *faultProxy) closeConns() {
	p.connMu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c.Conn)
	}
	clear(p.conns)
	p.connMu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (p *faultProxy) shutdown() {
	close(p.stop)
	p.down()
	p.closeConns()
	p.wg.Wait()
	p.tr.CloseIdleConnections()
}

// requests returns the delivery requests received so far.
func (p *faultProxy) requests() []seenDelivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-p.ready:
	case <-r.Context().Done():
		return
	case <-p.stop:
		http.Error(w, "proxy stopped", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == releasePath && p.failConfirms.Load() && isConfirm(r) {
		http.Error(w, "confirm lost (injected by the test)", http.StatusInternalServerError)
		return
	}
	if r.URL.Path == releasePath && p.releaseCuts.Add(-1) >= 0 {
		p.cutAnswer(w, r)
		return
	}
	if r.URL.Path == directoryPath {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if len(body) > 0 && body[0] == 'u' { // a change; replaces and digests come from other causes
			p.pushes.Add(1)
			p.pushBytes.Add(int64(len(body)))
		}
	}
	if r.URL.Path != apiDeliveriesPath || r.Method != http.MethodPost {
		p.rp.ServeHTTP(w, r)
		return
	}
	p.deliveries.Add(1)
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	mode := deliveryFault(p.mode.Load())
	if mode == deliveriesReset {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
			}
		}
		return
	}
	// Reading the whole body lets the server notice a caller that gives up
	// (the request's context ends), and lets the test inspect it.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := seenDelivery{header: r.Header.Clone()}
	_ = json.Unmarshal(body, &rec.body)
	p.mu.Lock()
	p.seen = append(p.seen, rec)
	p.mu.Unlock()
	switch mode {
	case deliveriesFail:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"status":"error","code":"internal","detail":"injected by the test"}`)
		return
	case deliveriesHang:
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
		return
	case deliveriesGate:
		select {
		case p.arrived <- struct{}{}:
		default:
		}
		select {
		case <-p.release:
		case <-r.Context().Done():
			return
		case <-p.stop:
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// cutReleaseAnswers makes the proxy cut the next n answers to
// POST /v1/gateway/cluster/release halfway: the node answered (and let the
// participant go), the asking peer gets half the body and a closed
// connection.
func (p *faultProxy) cutReleaseAnswers(n int64) { p.releaseCuts.Store(n) }

// isConfirm reports whether r is a release's confirm; r's body stays
// readable.
func isConfirm(r *http.Request) bool {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var ref routing.ParticipantRef
	return json.Unmarshal(body, &ref) == nil && ref.Confirm
}

// cutAnswer passes r to the node and sends back half its answer, with the
// whole answer's Content-Length, then closes the connection.
func (p *faultProxy) cutAnswer(w http.ResponseWriter, r *http.Request) {
	out := r.Clone(r.Context())
	target := *p.target.Load()
	target.Path = r.URL.Path
	out.URL, out.RequestURI, out.Host = &target, "", ""
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	p.releasesCut.Add(1)
	_, _ = fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		resp.StatusCode, http.StatusText(resp.StatusCode), len(body))
	_, _ = buf.Write(body[:len(body)/2])
	_ = buf.Flush()
}

// cutListener is a faultProxy's listener: while the proxy is cut it closes
// what it accepts; otherwise it tracks each connection, so that a cut can
// close them all.
type cutListener struct {
	net.Listener
	p *faultProxy
}

func (l cutListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.p.connMu.Lock()
		cut := l.p.cut
		tc := &trackedConn{Conn: c, p: l.p}
		if !cut {
			l.p.conns[tc] = struct{}{}
		}
		l.p.connMu.Unlock()
		if !cut {
			return tc, nil
		}
		_ = c.Close()
	}
}

// trackedConn is a connection a faultProxy carries; closing it forgets it.
type trackedConn struct {
	net.Conn
	p *faultProxy
}

func (c *trackedConn) Close() error {
	c.p.connMu.Lock()
	delete(c.p.conns, c)
	c.p.connMu.Unlock()
	return c.Conn.Close()
}

// CloseWrite passes on the half-close http.Server does before it closes.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ---------------------------------------------------------------------------
// Requests that never call require.

// boundedAnswer is an HTTP answer, or the error of a request that failed or
// outlived its limit.
type boundedAnswer struct {
	status  int
	header  http.Header
	body    map[string]any
	raw     []byte
	elapsed time.Duration
	err     error
}

// api is the answer as apiResponse, for apiRequireError and the like.
func (a boundedAnswer) api() apiResponse {
	return apiResponse{Status: a.status, Header: a.header, Body: a.body, Raw: a.raw}
}

// sendBounded sends v (see encodeBody; nil: no body) with header and gives
// up after limit. It never calls require, so goroutines and Eventually
// conditions may use it.
func sendBounded(method, u string, v any, header map[string]string, limit time.Duration) boundedAnswer {
	var body []byte
	if v != nil {
		var err error
		if body, err = encodeBody(v); err != nil {
			return boundedAnswer{err: err}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := newRequest(ctx, method, u, body, header)
	if err != nil {
		return boundedAnswer{err: err}
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return boundedAnswer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a := boundedAnswer{status: resp.StatusCode, header: resp.Header, raw: raw, elapsed: time.Since(start), err: err}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// memberStates reads GET /v1/gateway/members from base: node name → state
// (empty when the node does not answer).
func memberStates(base string, header map[string]string) map[string]string {
	a := sendBounded(http.MethodGet, base+"/v1/gateway/members", nil, header, 5*time.Second)
	out := map[string]string{}
	list, _ := a.body["members"].([]any)
	for _, m := range list {
		if m, ok := m.(map[string]any); ok {
			name, _ := m["name"].(string)
			out[name], _ = m["state"].(string)
		}
	}
	return out
}

// directURL is a node's own listener, bypassing any proxy in front of it.
func directURL(n *Node) string { return "http://" + n.Addr().String() }
