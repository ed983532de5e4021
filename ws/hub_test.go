package ws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/client"
	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// ---------------------------------------------------------------------------
// Fakes: the Backend seam and a recording Listener.

type backendCall struct {
	Method  string
	Who     Identity
	Event   json.RawMessage
	Session string
}

// fakeBackend records every call and answers each with the same Reply.
type fakeBackend struct {
	mu      sync.Mutex
	calls   []backendCall
	reply   Reply
	replies map[string]Reply // per method, overriding reply
}

func (b *fakeBackend) record(c backendCall) Reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, c)
	if r, ok := b.replies[c.Method]; ok {
		return r
	}
	return b.reply
}

func (b *fakeBackend) Submit(_ context.Context, who Identity, event json.RawMessage) Reply {
	return b.record(backendCall{Method: "submit", Who: who, Event: slices.Clone(event)})
}

func (b *fakeBackend) Join(_ context.Context, who Identity, session string) Reply {
	return b.record(backendCall{Method: "join", Who: who, Session: session})
}

func (b *fakeBackend) Leave(_ context.Context, who Identity, session string) Reply {
	return b.record(backendCall{Method: "leave", Who: who, Session: session})
}

func (b *fakeBackend) setReply(r Reply) {
	b.mu.Lock()
	b.reply = r
	b.replies = nil
	b.mu.Unlock()
}

func (b *fakeBackend) setReplyFor(method string, r Reply) {
	b.mu.Lock()
	if b.replies == nil {
		b.replies = map[string]Reply{}
	}
	b.replies[method] = r
	b.mu.Unlock()
}

func (b *fakeBackend) Calls() []backendCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// recListener records what a Hub announces.
type recListener struct {
	mu    sync.Mutex
	infos []ParticipantInfo
	gone  []string
}

func (l *recListener) LocalParticipant(p ParticipantInfo) {
	l.mu.Lock()
	if p.Sessions != nil {
		panic("the hub announced sessions with a participant: they come one at a time")
	}
	p.Sessions = l.withSessionLocked(p.ID, func(ss []string) []string { return ss }).Sessions
	l.infos = append(l.infos, p)
	l.mu.Unlock()
}

func (l *recListener) LocalSessionJoined(id, typ, session string) {
	l.mu.Lock()
	info := l.withSessionLocked(id, func(ss []string) []string {
		if !slices.Contains(ss, session) {
			ss = append(ss, session)
			slices.Sort(ss)
		}
		return ss
	})
	info.Type = typ
	l.infos = append(l.infos, info)
	l.mu.Unlock()
}

func (l *recListener) LocalSessionLeft(id, session string) {
	l.mu.Lock()
	l.infos = append(l.infos, l.withSessionLocked(id, func(ss []string) []string {
		return slices.DeleteFunc(ss, func(s string) bool { return s == session })
	}))
	l.mu.Unlock()
}

// withSessionLocked is the newest announcement about id with its sessions
// changed by fn: the listener hears joins and leaves one at a time and
// keeps the whole picture itself, as the directory does.
func (l *recListener) withSessionLocked(id string, fn func([]string) []string) ParticipantInfo {
	info := ParticipantInfo{ID: id}
	for i := len(l.infos) - 1; i >= 0; i-- {
		if l.infos[i].ID == id {
			info = l.infos[i]
			break
		}
	}
	info.Sessions = fn(slices.Clone(info.Sessions))
	return info
}

func (l *recListener) LocalParticipantGone(id string) {
	l.mu.Lock()
	l.gone = append(l.gone, id)
	l.mu.Unlock()
}

// last returns the newest announcement about id.
func (l *recListener) last(id string) (ParticipantInfo, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.infos) - 1; i >= 0; i-- {
		if l.infos[i].ID == id {
			return l.infos[i], true
		}
	}
	return ParticipantInfo{}, false
}

func (l *recListener) about(id string) []ParticipantInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ParticipantInfo
	for _, in := range l.infos {
		if in.ID == id {
			out = append(out, in)
		}
	}
	return out
}

func (l *recListener) heardGone(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.gone, id)
}

// fakeClock is an injectable Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// ---------------------------------------------------------------------------
// A hub behind a real loopback HTTP server.

type testHub struct {
	t        *testing.T
	hub      *Hub
	srv      *httptest.Server
	backend  *fakeBackend
	listener *recListener
	// attachErrs receives every non-nil error Attach returned.
	attachErrs chan error
	// maxConns is passed to Attach.
	maxConns int
	// wrap, when set, wraps the handler's ResponseWriter (before Attach).
	wrap func(http.ResponseWriter) http.ResponseWriter
	// serverSndBuf, when set, fixes the send buffer of the server's sockets
	// (turning off the kernel's autotuning, which can buffer megabytes).
	serverSndBuf int
}

// newTestHub starts a hub with cfg (Backend and Listener filled in unless
// set) behind an httptest server; both are stopped when the test ends, the
// hub first.
func newTestHub(t *testing.T, cfg Config, opts ...func(*testHub)) *testHub {
	t.Helper()
	th := &testHub{t: t, backend: &fakeBackend{reply: Reply{Status: 200, Body: json.RawMessage(`{"status":"ok"}`)}},
		listener: &recListener{}, attachErrs: make(chan error, 64)}
	for _, o := range opts {
		o(th) // before the server starts: the handler reads these fields unlocked
	}
	if cfg.Backend == nil {
		cfg.Backend = th.backend
	}
	if cfg.Listener == nil {
		cfg.Listener = th.listener
	}
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	th.hub = NewHub(cfg)
	th.srv = httptest.NewUnstartedServer(http.HandlerFunc(th.serve))
	if th.serverSndBuf > 0 {
		th.srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetWriteBuffer(th.serverSndBuf)
			}
			return ctx
		}
	}
	th.srv.Start()
	t.Cleanup(th.srv.Close) // runs last
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, th.hub.Shutdown(ctx), "hub shutdown")
	})
	return th
}

// attachRequest builds the AttachRequest a gateway would from the query.
func attachRequest(q url.Values) (AttachRequest, error) {
	req := AttachRequest{
		Identity: Identity{ParticipantID: q.Get("participant_id"), ParticipantType: q.Get("participant_type"), Credential: "cred-" + q.Get("participant_id")},
		Sessions: q["session_id"],
		Batch:    q.Get("batch") == "1",
	}
	if req.ParticipantType == "" {
		req.ParticipantType = "ai"
	}
	if req.ParticipantID == "" {
		return req, errors.New("participant_id is required")
	}
	if s := q.Get("resume_from"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return req, err
		}
		req.ResumeFrom = &v
	}
	return req, nil
}

func (th *testHub) serve(w http.ResponseWriter, r *http.Request) {
	req, err := attachRequest(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if th.wrap != nil {
		w = th.wrap(w)
	}
	err = th.hub.Attach(w, r, req, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled}, th.maxConns)
	if err != nil {
		select {
		case th.attachErrs <- err:
		default:
		}
		if errors.Is(err, ErrDraining) || errors.Is(err, ErrTooManyConnections) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable) // Attach did not upgrade
		}
	}
}

func (th *testHub) wsURL(q url.Values) string { return testkit.AttachURL(th.srv.URL, q) }

// dial connects with query q (participant_id included).
func (th *testHub) dial(q url.Values) (*websocket.Conn, *http.Response, error) {
	return th.dialWith(th.srv.Client(), q)
}

func (th *testHub) dialWith(hc *http.Client, q url.Values) (*websocket.Conn, *http.Response, error) {
	return testkit.Dial(th.wsURL(q), &websocket.DialOptions{HTTPClient: hc})
}

// attach connects participant id with extra query parameters and returns the
// client and its first frame, which must be the welcome.
func (th *testHub) attach(id string, extra url.Values) (*wsClient, frame) {
	th.t.Helper()
	return th.attachWith(th.srv.Client(), id, extra)
}

func (th *testHub) attachWith(hc *http.Client, id string, extra url.Values) (*wsClient, frame) {
	th.t.Helper()
	q := url.Values{"participant_id": {id}}
	for k, v := range extra {
		q[k] = v
	}
	c, _, err := th.dialWith(hc, q)
	require.NoError(th.t, err, "dial %s", q.Encode())
	cl := newWSClient(th.t, c)
	w := cl.next()
	require.Equal(th.t, "welcome", w.Type, "the first frame must be the welcome: %s", w.Raw)
	return cl, w
}

func (th *testHub) participant(id string) *Participant {
	th.t.Helper()
	p := th.hub.Lookup(id)
	require.NotNil(th.t, p, "participant %s is not on the hub", id)
	return p
}

func (th *testHub) deliver(id string, evs ...*Event) {
	th.t.Helper()
	p := th.participant(id)
	for _, ev := range evs {
		require.True(th.t, th.hub.Deliver(p, ev).Accepted(), "Deliver to %s", id)
	}
}

func (th *testHub) waitOnline(id string, online bool) {
	th.t.Helper()
	require.Eventually(th.t, func() bool {
		p := th.hub.Lookup(id)
		return p != nil && p.Info().Online == online
	}, 10*time.Second, time.Millisecond, "%s never became online=%v", id, online)
}

func (th *testHub) isDraining() bool {
	th.hub.connMu.Lock()
	defer th.hub.connMu.Unlock()
	return th.hub.draining
}

// shutdownInBackground starts the hub's Shutdown and returns where its
// result arrives; a panic in it arrives as an error.
func (th *testHub) shutdownInBackground() <-chan error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("Shutdown panicked: %v", r)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- th.hub.Shutdown(ctx)
	}()
	return done
}

// requireShutdownOK waits for the result of shutdownInBackground, which
// must be nil.
func requireShutdownOK(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func (th *testHub) attachErr() error {
	th.t.Helper()
	select {
	case err := <-th.attachErrs:
		return err
	case <-time.After(10 * time.Second):
		th.t.Fatal("Attach returned no error")
		return nil
	}
}

// boxState returns p's mailbox bounds and size.
func boxState(p *Participant) (oldest, newest uint64, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.box.oldest(), p.box.newest(), p.box.n
}

// connCloseCodes returns the pending close code of each open connection of p.
func connCloseCodes(p *Participant) []websocket.StatusCode {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []websocket.StatusCode
	for _, c := range p.conns {
		out = append(out, c.closeCode)
	}
	return out
}

// counterValue reads a counter's or a gauge's value.
var counterValue = testkit.MetricValue

// ---------------------------------------------------------------------------
// A real client.

// frame is any server frame, decoded by the Go client's type (which so
// keeps up with what the hub sends); Raw keeps its bytes.
type frame = client.Frame

// wsClient is a testkit.WS under this package's names, whose frames
// decode to frame.
type wsClient struct {
	t    *testing.T
	ws   *testkit.WS
	conn *websocket.Conn // ws.Conn, for the tests that close or read the socket themselves
}

func newWSClient(t *testing.T, conn *websocket.Conn) *wsClient {
	return &wsClient{t: t, ws: testkit.NewWS(t, conn), conn: conn}
}

// readMessage reads one WebSocket message as it is.
func (c *wsClient) readMessage() ([]byte, error) { return c.ws.ReadMessage() }

func (c *wsClient) send(v any) {
	c.t.Helper()
	c.ws.Send(v)
}

func (c *wsClient) sendRaw(b []byte) {
	c.t.Helper()
	c.ws.SendRaw(b)
}

func parseFrame(t *testing.T, raw []byte) frame {
	t.Helper()
	var f frame
	require.True(t, json.Valid(raw), "frame is not JSON: %q", raw)
	require.NoError(t, json.Unmarshal(raw, &f), "frame: %s", raw)
	f.Raw = raw
	return f
}

// next returns the next frame (splitting batched messages).
func (c *wsClient) next() frame {
	c.t.Helper()
	return parseFrame(c.t, c.ws.NextRaw())
}

// nextEvent returns the next frame, which must be an event with seq.
func (c *wsClient) nextEvent(seq uint64) frame {
	c.t.Helper()
	f := c.next()
	require.Equal(c.t, "event", f.Type, "want event %d, got %s", seq, f.Raw)
	require.Equal(c.t, seq, f.Seq, "frame %s", f.Raw)
	return f
}

// nextGap returns the next frame, which must be a gap from from to to.
func (c *wsClient) nextGap(from, to uint64) frame {
	c.t.Helper()
	g := c.next()
	require.Equal(c.t, "gap", g.Type, "want a gap, got %s", g.Raw)
	require.Equal(c.t, []uint64{from, to}, []uint64{g.FromSeq, g.ToSeq}, "frame %s", g.Raw)
	return g
}

// closeStatus reads until the connection ends and returns the close code and
// the frames that arrived before it.
func (c *wsClient) closeStatus() (websocket.StatusCode, []frame) {
	c.t.Helper()
	raws, code := c.ws.ReadUntilClose()
	var frames []frame
	for _, raw := range raws {
		frames = append(frames, parseFrame(c.t, raw))
	}
	return code, frames
}

func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func bodyEvent(id, session, body string) *Event {
	return NewEvent(id, session, json.RawMessage(body), time.Now())
}

func numberedEvent(n int) *Event {
	return bodyEvent(fmt.Sprintf("e%d", n), "s1", fmt.Sprintf(`{"n":%d}`, n))
}

// ---------------------------------------------------------------------------
// Tests.

func TestWelcomeFrameFirst(t *testing.T) {
	th := newTestHub(t, Config{Node: "node-7"})
	cl, w := th.attach("alice", q("participant_type", "human", "session_id", "s2", "session_id", "s1"))
	assert.Equal(t, "alice", w.ParticipantID)
	assert.Equal(t, "node-7", w.Node)
	assert.Equal(t, []string{"s1", "s2"}, w.Sessions, "the sessions joined, sorted")
	assert.Equal(t, uint64(0), w.Seq, "nothing was assigned yet")
	assert.False(t, w.Resumed)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(w.Raw, &fields))
	for _, k := range []string{"type", "participant_id", "node", "sessions", "seq", "resumed"} {
		assert.Contains(t, fields, k, "welcome lacks %s: %s", k, w.Raw)
	}

	p := th.participant("alice")
	assert.Equal(t, "human", p.Info().Type)
	assert.True(t, p.InSession("s1"))
	assert.True(t, p.InSession("s2"))
	assert.Contains(t, th.hub.SessionMembers("s1"), p)
	assert.Equal(t, 1, th.hub.Count())

	// Without sessions the welcome carries an empty list, not null.
	_, w2 := th.attach("bob", nil)
	assert.Contains(t, string(w2.Raw), `"sessions":[]`)

	// The welcome of a later connection gives the newest seq.
	th.deliver("alice", numberedEvent(1), numberedEvent(2))
	cl.nextEvent(1)
	cl.nextEvent(2)
	_, w3 := th.attach("alice", q("resume_from", "0"))
	assert.Equal(t, uint64(2), w3.Seq)
	assert.True(t, w3.Resumed, "replay starts before the newest seq")
}

func TestDeliverReachesConnection(t *testing.T) {
	th := newTestHub(t, Config{})
	cl, _ := th.attach("alice", q("session_id", "s1"))
	bodies := []string{`{"message":"one"}`, `{"message":"two","n":[1,2]}`, `{"message":"three"}`}
	th.deliver("alice",
		bodyEvent("e1", "s1", bodies[0]),
		bodyEvent("e2", "", bodies[1]),
		bodyEvent("e3", "s9", bodies[2]))
	for i, want := range []struct{ id, session string }{{"e1", "s1"}, {"e2", ""}, {"e3", "s9"}} {
		f := cl.nextEvent(uint64(i + 1))
		assert.Equal(t, want.id, f.EventID)
		assert.Equal(t, want.session, f.SessionID)
		assert.JSONEq(t, bodies[i], string(f.Event))
		if want.session == "" {
			assert.NotContains(t, string(f.Raw), "session_id")
		}
	}
	// Another participant's events do not reach alice: her next frame is her
	// own next event.
	th.attach("bob", nil)
	th.deliver("bob", numberedEvent(100))
	th.deliver("alice", numberedEvent(4))
	assert.Equal(t, "e4", cl.nextEvent(4).EventID)
}

func TestTwoConnectionsOfOneParticipant(t *testing.T) {
	th := newTestHub(t, Config{})
	a, _ := th.attach("alice", nil)
	b, _ := th.attach("alice", nil)
	assert.Len(t, connCloseCodes(th.participant("alice")), 2)
	for i := 1; i <= 5; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	for _, cl := range []*wsClient{a, b} {
		for i := 1; i <= 5; i++ {
			assert.Equal(t, fmt.Sprintf("e%d", i), cl.nextEvent(uint64(i)).EventID)
		}
	}
	// One of them going leaves the other served.
	require.NoError(t, a.conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return len(connCloseCodes(th.participant("alice"))) == 1 }, 10*time.Second, time.Millisecond)
	th.deliver("alice", numberedEvent(6))
	b.nextEvent(6)
	assert.True(t, th.participant("alice").Info().Online)
}

func TestResumeFromReplaysExactlyAfterIt(t *testing.T) {
	th := newTestHub(t, Config{})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	for i := 1; i <= 5; i++ {
		th.deliver("alice", numberedEvent(i))
	}

	cl, w := th.attach("alice", q("resume_from", "2"))
	assert.Equal(t, uint64(5), w.Seq)
	assert.True(t, w.Resumed)
	for i := 3; i <= 5; i++ {
		assert.Equal(t, fmt.Sprintf("e%d", i), cl.nextEvent(uint64(i)).EventID)
	}
	// Nothing else was queued: the next frame is the next event.
	th.deliver("alice", numberedEvent(6))
	cl.nextEvent(6)

	// resume_from at the newest: nothing to replay.
	cl2, w2 := th.attach("alice", q("resume_from", "6"))
	assert.Equal(t, uint64(6), w2.Seq)
	assert.False(t, w2.Resumed)
	// resume_from past the newest (e.g. a seq from a previous life) is clamped.
	cl3, w3 := th.attach("alice", q("resume_from", "1000"))
	assert.False(t, w3.Resumed)
	th.deliver("alice", numberedEvent(7))
	cl.nextEvent(7)
	cl2.nextEvent(7)
	cl3.nextEvent(7)

	// resume_from=0 replays everything held.
	cl4, w4 := th.attach("alice", q("resume_from", "0"))
	assert.True(t, w4.Resumed)
	for i := 1; i <= 7; i++ {
		cl4.nextEvent(uint64(i))
	}
}

func TestResumeFromOlderThanMailboxGivesGap(t *testing.T) {
	th := newTestHub(t, Config{MailboxSize: 3})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	for i := 1; i <= 6; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	oldest, newest, n := boxState(th.participant("alice"))
	require.Equal(t, []any{uint64(4), uint64(6), 3}, []any{oldest, newest, n})

	cl, w := th.attach("alice", q("resume_from", "1"))
	assert.Equal(t, uint64(6), w.Seq)
	assert.True(t, w.Resumed)
	g := cl.nextGap(2, 3)
	assert.JSONEq(t, `{"type":"gap","from_seq":2,"to_seq":3}`, string(g.Raw))
	for i := 4; i <= 6; i++ {
		assert.Equal(t, fmt.Sprintf("e%d", i), cl.nextEvent(uint64(i)).EventID)
	}

	cl0, _ := th.attach("alice", q("resume_from", "0"))
	cl0.nextGap(1, 3)
	cl0.nextEvent(4)
}

// TestConnectedClientFallingBehindMailboxGetsGap: a connection whose unsent
// events are evicted from the mailbox is told so with a gap, then goes on.
func TestConnectedClientFallingBehindMailboxGetsGap(t *testing.T) {
	const total, size = 500, 10
	th := newTestHub(t, Config{MailboxSize: size, WriteQueueBytes: 64 << 20},
		func(th *testHub) { th.serverSndBuf = 32 << 10 })
	cl, _ := th.attachWith(testkit.SmallBufferClient(t, 4096), "alice", nil)
	pad := strings.Repeat("z", 2048)
	// 1 MiB for a client that reads nothing yet: its writer is stuck long
	// before the end, and the mailbox keeps only the last 10.
	for i := 1; i <= total; i++ {
		th.deliver("alice", bodyEvent(fmt.Sprintf("e%d", i), "s1", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)))
	}
	next := uint64(1)
	gaps := 0
	for next <= total {
		f := cl.next()
		switch f.Type {
		case "gap":
			gaps++
			require.Equal(t, next, f.FromSeq, "the gap starts where the connection was")
			require.GreaterOrEqual(t, f.ToSeq, f.FromSeq)
			require.LessOrEqual(t, f.ToSeq, uint64(total-size), "the last %d are still held", size)
			next = f.ToSeq + 1
		case "event":
			require.Equal(t, next, f.Seq, "frame %.80s", f.Raw)
			require.Equal(t, fmt.Sprintf("e%d", next), f.EventID)
			next++
		default:
			require.Fail(t, "unexpected frame", "%.80s", f.Raw)
		}
	}
	// Every seq was either received or reported in a gap, in order; at least
	// one stretch was evicted (more than one when the writer fell behind
	// again between its passes).
	assert.GreaterOrEqual(t, gaps, 1, "the evicted events were not reported")
	th.deliver("alice", numberedEvent(total+1))
	cl.nextEvent(total + 1)
}

func TestReconnectWithoutResumeFromStartsAfterLastWritten(t *testing.T) {
	th := newTestHub(t, Config{})
	cl, _ := th.attach("alice", nil)
	for i := 1; i <= 3; i++ {
		th.deliver("alice", numberedEvent(i))
		cl.nextEvent(uint64(i))
	}
	require.NoError(t, cl.conn.Close(websocket.StatusNormalClosure, "bye"))
	th.waitOnline("alice", false)

	// Events that arrive while it is away wait in the mailbox.
	th.deliver("alice", numberedEvent(4), numberedEvent(5))
	cl2, w := th.attach("alice", nil)
	assert.Equal(t, uint64(5), w.Seq)
	assert.True(t, w.Resumed, "replay starts at 4, before the newest")
	assert.Equal(t, "e4", cl2.nextEvent(4).EventID)
	assert.Equal(t, "e5", cl2.nextEvent(5).EventID)

	// One event waiting: replay starts at the newest seq, which is resumed too.
	require.NoError(t, cl2.conn.Close(websocket.StatusNormalClosure, "bye"))
	th.waitOnline("alice", false)
	th.deliver("alice", numberedEvent(6))
	cl3, w3 := th.attach("alice", nil)
	assert.Equal(t, uint64(6), w3.Seq)
	assert.True(t, w3.Resumed)
	cl3.nextEvent(6)

	// And with nothing waiting, a reconnect starts at the next new event.
	require.NoError(t, cl3.conn.Close(websocket.StatusNormalClosure, "bye"))
	th.waitOnline("alice", false)
	cl4, w4 := th.attach("alice", nil)
	assert.Equal(t, uint64(6), w4.Seq)
	assert.False(t, w4.Resumed)
	th.deliver("alice", numberedEvent(7))
	cl4.nextEvent(7)
}

func TestBatchPacksFramesIntoOneMessage(t *testing.T) {
	const total = 300
	const maxBatch = 4096
	th := newTestHub(t, Config{MaxBatchBytes: maxBatch})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	// Everything is in the mailbox before the connection exists, so its
	// writer finds many frames ready at once.
	for i := 1; i <= total; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	c, _, err := th.dial(q("participant_id", "alice", "batch", "1"))
	require.NoError(t, err)
	cl := newWSClient(t, c)

	var frames []frame
	maxPerMessage := 0
	messages := 0
	for len(frames) < total+1 { // the welcome and every event
		data, err := cl.readMessage()
		require.NoError(t, err)
		messages++
		parts := bytes.Split(data, []byte("\n"))
		maxPerMessage = max(maxPerMessage, len(parts))
		eventBytes := 0
		for _, raw := range parts {
			require.NotEmpty(t, raw, "empty frame in message %q", data)
			f := parseFrame(t, raw)
			if f.Type == "event" {
				eventBytes += len(raw)
			}
			frames = append(frames, f)
		}
		if len(parts) > 1 {
			assert.LessOrEqual(t, eventBytes, maxBatch, "a batched message holds at most MaxBatchBytes of event frames")
		}
	}
	assert.Greater(t, maxPerMessage, 1, "no message carried more than one frame")
	assert.Less(t, messages, total, "batching did not reduce the number of messages")
	require.Equal(t, "welcome", frames[0].Type, "the welcome comes first")
	for i, f := range frames[1:] {
		require.Equal(t, "event", f.Type)
		require.Equal(t, uint64(i+1), f.Seq, "seqs are contiguous")
		require.Equal(t, fmt.Sprintf("e%d", i+1), f.EventID)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i+1), string(f.Event))
	}

	// Events delivered live to a batch connection arrive intact too.
	for i := total + 1; i <= total+50; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	for i := total + 1; i <= total+50; i++ {
		cl.nextEvent(uint64(i))
	}
}

func TestClientFrames(t *testing.T) {
	th := newTestHub(t, Config{})
	cl, _ := th.attach("alice", q("participant_type", "human"))

	t.Run("not JSON", func(t *testing.T) {
		cl.sendRaw([]byte(`{"type":"submit",`))
		f := cl.next()
		require.Equal(t, "error", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "invalid_frame", f.Code)
		assert.NotEmpty(t, f.Detail)
		cl.sendRaw([]byte(`not json at all`))
		assert.Equal(t, "invalid_frame", cl.next().Code)
		cl.sendRaw([]byte(`[1,2]`))
		assert.Equal(t, "invalid_frame", cl.next().Code)
	})
	t.Run("unknown type", func(t *testing.T) {
		cl.send(map[string]any{"type": "dance", "id": "x1"})
		f := cl.next()
		require.Equal(t, "error", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "unknown_type", f.Code)
		assert.Contains(t, f.Detail, "dance")
	})
	t.Run("missing type", func(t *testing.T) {
		cl.send(map[string]any{"id": "x2"})
		f := cl.next()
		require.Equal(t, "error", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "missing_type", f.Code)
	})
	t.Run("submit with id", func(t *testing.T) {
		th.backend.setReply(Reply{Status: 200, Body: json.RawMessage(`{"status":"ok","event_id":"ev-9","recipients":2}`)})
		cl.send(map[string]any{"type": "submit", "id": "c1", "event": map[string]any{"message": "hi", "session_id": "s1"}})
		f := cl.next()
		require.Equal(t, "result", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "c1", f.ID)
		assert.Equal(t, 200, f.Status)
		assert.JSONEq(t, `{"status":"ok","event_id":"ev-9","recipients":2}`, string(f.Body))
		calls := th.backend.Calls()
		require.NotEmpty(t, calls)
		last := calls[len(calls)-1]
		assert.Equal(t, "submit", last.Method)
		assert.Equal(t, Identity{ParticipantID: "alice", ParticipantType: "human", Credential: "cred-alice"}, last.Who)
		assert.JSONEq(t, `{"message":"hi","session_id":"s1"}`, string(last.Event))
	})
	t.Run("join and leave with id", func(t *testing.T) {
		th.backend.setReply(Reply{Status: 201, Body: json.RawMessage(`{"joined":true}`)})
		cl.send(map[string]any{"type": "join", "id": "j1", "session_id": "s5"})
		f := cl.next()
		require.Equal(t, "result", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "j1", f.ID)
		assert.Equal(t, 201, f.Status)
		assert.JSONEq(t, `{"joined":true}`, string(f.Body))

		th.backend.setReply(Reply{Status: 404, Body: json.RawMessage(`{"status":"error","code":"not_member"}`), Code: "not_member", Detail: "not in s6"})
		cl.send(map[string]any{"type": "leave", "id": "l1", "session_id": "s6"})
		f = cl.next()
		require.Equal(t, "result", f.Type, "a failure with an id is a result too: %s", f.Raw)
		assert.Equal(t, "l1", f.ID)
		assert.Equal(t, 404, f.Status)
		assert.JSONEq(t, `{"status":"error","code":"not_member"}`, string(f.Body))

		calls := th.backend.Calls()
		require.GreaterOrEqual(t, len(calls), 2)
		assert.Equal(t, "join", calls[len(calls)-2].Method)
		assert.Equal(t, "s5", calls[len(calls)-2].Session)
		assert.Equal(t, "leave", calls[len(calls)-1].Method)
		assert.Equal(t, "s6", calls[len(calls)-1].Session)
		assert.Equal(t, "alice", calls[len(calls)-1].Who.ParticipantID)
	})
	t.Run("without id", func(t *testing.T) {
		// A success without id is silent...
		th.backend.setReply(Reply{Status: 200, Body: json.RawMessage(`{"status":"ok"}`)})
		th.backend.setReplyFor("submit", Reply{Status: 403, Body: json.RawMessage(`{"status":"error"}`), Code: "forbidden", Detail: "no access to s8"})
		before := len(th.backend.Calls())
		cl.send(map[string]any{"type": "join", "session_id": "s7"})
		// ...and a failure without id is an error frame with the Reply's code.
		cl.send(map[string]any{"type": "submit", "event": map[string]any{"message": "x"}})
		f := cl.next()
		require.Equal(t, "error", f.Type, "the silent success must not be answered: %s", f.Raw)
		assert.Equal(t, "forbidden", f.Code)
		assert.Equal(t, "no access to s8", f.Detail)
		assert.Len(t, th.backend.Calls(), before+2)
	})
	t.Run("submit without event", func(t *testing.T) {
		before := len(th.backend.Calls())
		cl.send(map[string]any{"type": "submit", "id": "c2"})
		f := cl.next()
		require.Equal(t, "result", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "c2", f.ID)
		assert.Equal(t, http.StatusUnprocessableEntity, f.Status)
		assert.Contains(t, string(f.Body), "missing_field")
		cl.send(map[string]any{"type": "submit", "event": nil})
		assert.Equal(t, "missing_field", cl.next().Code)
		assert.Len(t, th.backend.Calls(), before, "an invalid submit does not reach the backend")
	})
	t.Run("ack", func(t *testing.T) {
		cl.send(map[string]any{"type": "ack", "id": "a1", "seq": 0})
		f := cl.next()
		require.Equal(t, "result", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "a1", f.ID)
		assert.Equal(t, 200, f.Status)
		cl.send(map[string]any{"type": "ack"})
		f = cl.next()
		require.Equal(t, "error", f.Type, "frame %s", f.Raw)
		assert.Equal(t, "missing_field", f.Code)
	})
	// After all that, the connection is still open and delivering.
	th.deliver("alice", numberedEvent(1))
	cl.nextEvent(1)
}

func TestAckFreesMailboxEntries(t *testing.T) {
	th := newTestHub(t, Config{})
	cl, _ := th.attach("alice", nil)
	for i := 1; i <= 5; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	for i := 1; i <= 5; i++ {
		cl.nextEvent(uint64(i))
	}
	p := th.participant("alice")
	oldest, _, n := boxState(p)
	require.Equal(t, uint64(1), oldest)
	require.Equal(t, 5, n)

	cl.send(map[string]any{"type": "ack", "seq": 3, "id": "a1"})
	f := cl.next()
	require.Equal(t, "result", f.Type, "frame %s", f.Raw)
	oldest, newest, n := boxState(p)
	assert.Equal(t, uint64(4), oldest, "acked entries are freed")
	assert.Equal(t, uint64(5), newest)
	assert.Equal(t, 2, n)

	// A new connection resuming from below the acked seq finds a gap.
	cl2, w := th.attach("alice", q("resume_from", "1"))
	assert.Equal(t, uint64(5), w.Seq)
	cl2.nextGap(2, 3)
	cl2.nextEvent(4)
	cl2.nextEvent(5)

	// An older ack changes nothing; an ack past newest frees all, and seqs
	// go on.
	cl.send(map[string]any{"type": "ack", "seq": 2, "id": "a2"})
	require.Equal(t, "result", cl.next().Type)
	_, _, n = boxState(p)
	assert.Equal(t, 2, n)
	cl.send(map[string]any{"type": "ack", "seq": 1000, "id": "a3"})
	require.Equal(t, "result", cl.next().Type)
	oldest, newest, n = boxState(p)
	assert.Equal(t, 0, n)
	assert.Equal(t, uint64(6), oldest)
	assert.Equal(t, uint64(5), newest)
	th.deliver("alice", numberedEvent(6))
	cl.nextEvent(6)
	cl2.nextEvent(6)
}

func TestOversizedClientFrameCloses1009(t *testing.T) {
	th := newTestHub(t, Config{MaxFrameBytes: 1024})
	cl, _ := th.attach("alice", nil)
	// A frame within the limit is fine.
	ok, err := json.Marshal(map[string]any{"type": "submit", "id": "c1", "event": map[string]any{"pad": strings.Repeat("x", 900)}})
	require.NoError(t, err)
	require.LessOrEqual(t, len(ok), 1024)
	cl.sendRaw(ok)
	require.Equal(t, "result", cl.next().Type)

	big, err := json.Marshal(map[string]any{"type": "submit", "id": "c2", "event": map[string]any{"pad": strings.Repeat("x", 2000)}})
	require.NoError(t, err)
	cl.sendRaw(big)
	code, frames := cl.closeStatus()
	assert.Equal(t, websocket.StatusMessageTooBig, code)
	assert.Empty(t, frames, "the oversized frame is not answered")
	th.waitOnline("alice", false)
	assert.Len(t, th.backend.Calls(), 1, "the oversized frame never reached the backend")
}

// TestSlowConsumer: a client that stops reading is closed with 4000 without
// slowing delivery to anyone else, and resumes from the mailbox.
func TestSlowConsumer(t *testing.T) {
	const total = 2000
	// Small socket buffers on both ends, so that a client that stops reading
	// stops its server's writer after some 100 KiB, not after megabytes of
	// kernel buffering.
	th := newTestHub(t, Config{WriteQueueBytes: 64 << 10, MailboxSize: 4096, WriteTimeout: time.Minute},
		func(th *testHub) { th.serverSndBuf = 32 << 10 })
	slow, _ := th.attachWith(testkit.SmallBufferClient(t, 4096), "slow", nil)
	fast, _ := th.attach("fast", nil)
	slowP, fastP := th.participant("slow"), th.participant("fast")

	// The fast client reads everything and reports each seq.
	progress := make(chan uint64, total)
	readErr := make(chan error, 1)
	go func() {
		defer close(progress)
		for want := uint64(1); want <= total; want++ {
			data, err := fast.readMessage()
			if err != nil {
				readErr <- err
				return
			}
			var f frame
			if err := json.Unmarshal(data, &f); err != nil || f.Type != "event" || f.Seq != want {
				readErr <- fmt.Errorf("fast client: want event %d, got %s (%v)", want, data, err)
				return
			}
			progress <- f.Seq
		}
	}()
	var fastSeen uint64
	waitFast := func(seq uint64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for fastSeen < seq {
			select {
			case s, ok := <-progress:
				if !ok {
					require.FailNow(t, "fast client stopped", "%v", <-readErr)
				}
				fastSeen = s
			case <-deadline:
				require.FailNow(t, "fast client is starved", "it saw %d of %d", fastSeen, seq)
			}
		}
	}

	// Deliver never waits on a socket: were it to wait on the slow one, this
	// loop would stall until the sweeper cut that write (a minute), and the
	// slow client would see no 4000 below.
	pad := strings.Repeat("x", 1024)
	for i := 1; i <= total; i++ {
		ev := bodyEvent(fmt.Sprintf("e%d", i), "s1", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
		require.True(t, th.hub.Deliver(slowP, ev).Accepted())
		require.True(t, th.hub.Deliver(fastP, ev).Accepted())
		if i%25 == 0 {
			waitFast(uint64(i)) // the fast one keeps up while the slow one reads nothing
		}
	}
	waitFast(total)
	assert.Equal(t, []websocket.StatusCode{0}, connCloseCodes(fastP), "the fast client was never marked slow")

	// The slow one was marked for 4000 (its writer is stuck on the socket).
	require.Eventually(t, func() bool {
		return slices.Equal(connCloseCodes(slowP), []websocket.StatusCode{closeSlowConsumer})
	}, 10*time.Second, time.Millisecond, "the slow client was not marked as a slow consumer; codes %v", connCloseCodes(slowP))
	assert.Equal(t, float64(1), counterValue(t, th.hub.cfg.Metrics.SlowConsumers))

	// It reads again: some events, in order, then 4000.
	code, frames := slow.closeStatus()
	assert.Equal(t, closeSlowConsumer, code, "close code")
	var last uint64
	for _, f := range frames {
		require.Equal(t, "event", f.Type, "frame %s", f.Raw)
		require.Equal(t, last+1, f.Seq, "contiguous")
		last = f.Seq
	}
	require.Less(t, last, uint64(total), "the slow client cannot have received everything")
	t.Logf("slow client read %d of %d events before 4000", last, total)

	// Reconnecting with resume_from gets the rest from the mailbox.
	slow2, w := th.attach("slow", q("resume_from", strconv.FormatUint(last, 10)))
	assert.Equal(t, uint64(total), w.Seq)
	assert.True(t, w.Resumed)
	for s := last + 1; s <= total; s++ {
		f := slow2.nextEvent(s)
		require.Equal(t, fmt.Sprintf("e%d", s), f.EventID)
	}
	require.NoError(t, slow2.conn.Close(websocket.StatusNormalClosure, ""))
	require.NoError(t, fast.conn.Close(websocket.StatusNormalClosure, ""))
}

func TestShutdownFlushesThenGoingAway(t *testing.T) {
	const total = 400
	// Small socket buffers and clients that do not read yet: most events are
	// still in the mailboxes, not collected by the writers, when Shutdown
	// begins.
	th := newTestHub(t, Config{}, func(th *testHub) { th.serverSndBuf = 32 << 10 })
	hc := testkit.SmallBufferClient(t, 4096)
	a, _ := th.attachWith(hc, "alice", nil)
	b, _ := th.attachWith(hc, "bob", q("batch", "1"))
	pad := strings.Repeat("y", 2048)
	for i := 1; i <= total; i++ {
		ev := bodyEvent(fmt.Sprintf("e%d", i), "s1", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
		th.deliver("alice", ev)
		th.deliver("bob", ev)
	}
	for _, id := range []string{"alice", "bob"} {
		p := th.participant(id)
		p.mu.Lock()
		collected := p.conns[0].next - 1
		p.mu.Unlock()
		require.Less(t, collected, uint64(total), "%s's writer already took everything; the test would prove nothing", id)
	}
	done := th.shutdownInBackground()
	for _, cl := range []*wsClient{a, b} {
		code, frames := cl.closeStatus()
		assert.Equal(t, websocket.StatusGoingAway, code)
		require.Len(t, frames, total, "every queued event is flushed before the close")
		for i, f := range frames {
			require.Equal(t, uint64(i+1), f.Seq)
		}
	}
	requireShutdownOK(t, done)
	assert.Equal(t, float64(0), counterValue(t, th.hub.cfg.Metrics.Connections))

	// After Shutdown no one attaches.
	_, resp, err := th.dial(q("participant_id", "carol"))
	require.Error(t, err)
	if resp != nil {
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}
	assert.ErrorIs(t, th.attachErr(), ErrDraining)
	assert.NoError(t, th.hub.Shutdown(context.Background()), "a second Shutdown is harmless")
}

func TestAttachDuringShutdownIsRefused(t *testing.T) {
	th := newTestHub(t, Config{})
	a, _ := th.attach("alice", nil)
	// alice does not read, so her close handshake, and Shutdown, wait.
	done := th.shutdownInBackground()
	require.Eventually(t, th.isDraining, 10*time.Second, time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) before its connection closed", err)
	default:
	}

	_, resp, err := th.dial(q("participant_id", "bob"))
	require.Error(t, err, "an attach during Shutdown is refused")
	if resp != nil {
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}
	assert.ErrorIs(t, th.attachErr(), ErrDraining)
	assert.Nil(t, th.hub.Lookup("bob"), "a refused attach creates no participant")

	code, _ := a.closeStatus()
	assert.Equal(t, websocket.StatusGoingAway, code)
	requireShutdownOK(t, done)
}

// blockingHijacker holds an upgrade inside websocket.Accept (at Hijack) until
// released, so that a test can act while Attach has reserved a connection slot
// but not finished upgrading.
type blockingHijacker struct {
	http.ResponseWriter
	reached chan struct{}
	release chan struct{}
}

func (b *blockingHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	close(b.reached)
	<-b.release
	return http.NewResponseController(b.ResponseWriter).Hijack()
}

// TestShutdownWhileAttachUpgrading: Shutdown must cope with a connection whose
// upgrade is still in progress (Attach reserved its slot in h.conns before
// calling websocket.Accept).
func TestShutdownWhileAttachUpgrading(t *testing.T) {
	hj := &blockingHijacker{reached: make(chan struct{}), release: make(chan struct{})}
	var wrapped atomic.Bool
	th := newTestHub(t, Config{}, func(th *testHub) {
		th.wrap = func(w http.ResponseWriter) http.ResponseWriter {
			if wrapped.CompareAndSwap(false, true) {
				hj.ResponseWriter = w
				return hj
			}
			return w
		}
	})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hj.release) }) }

	type dialResult struct {
		c   *websocket.Conn
		err error
	}
	dialed := make(chan dialResult, 1)
	var dialRes *dialResult
	getDial := func() dialResult {
		if dialRes == nil {
			r := <-dialed
			dialRes = &r
		}
		return *dialRes
	}
	t.Cleanup(func() {
		release()
		if r := getDial(); r.c != nil {
			_ = r.c.CloseNow()
		}
	})
	go func() {
		c, _, err := th.dial(q("participant_id", "alice"))
		dialed <- dialResult{c, err}
	}()
	select {
	case <-hj.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade never reached Hijack")
	}

	done := th.shutdownInBackground()
	require.Eventually(t, th.isDraining, 10*time.Second, time.Millisecond)
	// Shutdown must now wait for the reserved connection; give a broken one
	// the chance to fail before the upgrade goes on.
	select {
	case r := <-done:
		release()
		t.Fatalf("Shutdown returned while an attach was still upgrading: %v", r)
	case <-time.After(200 * time.Millisecond):
	}
	release()

	// The upgrade completes and the connection is closed at once with 1001.
	if r := getDial(); r.err == nil {
		cl := newWSClient(t, r.c)
		code, _ := cl.closeStatus()
		assert.Equal(t, websocket.StatusGoingAway, code)
	}
	requireShutdownOK(t, done)
}

func TestTooManyConnections(t *testing.T) {
	th := newTestHub(t, Config{}, func(th *testHub) { th.maxConns = 1 })
	a, _ := th.attach("alice", nil)
	_, resp, err := th.dial(q("participant_id", "bob"))
	require.Error(t, err)
	if resp != nil {
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}
	assert.ErrorIs(t, th.attachErr(), ErrTooManyConnections)
	require.NoError(t, a.conn.Close(websocket.StatusNormalClosure, ""))
	// The slot is freed when the connection goes.
	require.Eventually(t, func() bool {
		c, _, err := th.dial(q("participant_id", "bob"))
		if err != nil {
			<-th.attachErrs
			return false
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		return true
	}, 10*time.Second, 5*time.Millisecond)
}

func TestOfflineParticipantRemoved(t *testing.T) {
	th := newTestHub(t, Config{OfflineTTL: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	on, _ := th.attach("online", q("session_id", "s1"))
	// Created after "online", so "online" has been around longer: a sweep
	// that removes "offline" would remove "online" too if it ignored its
	// connection.
	require.NoError(t, th.hub.Join("offline", "ai", "s1"))
	offP := th.participant("offline")
	require.Len(t, th.hub.SessionMembers("s1"), 2)

	require.Eventually(t, func() bool { return th.hub.Lookup("offline") == nil }, 10*time.Second, time.Millisecond)
	assert.True(t, th.listener.heardGone("offline"), "Listener heard LocalParticipantGone")
	assert.False(t, th.hub.Deliver(offP, numberedEvent(1)).Accepted(), "Deliver to a removed participant reports false")
	assert.NotContains(t, th.hub.SessionMembers("s1"), offP, "a removed participant leaves its sessions")

	onP := th.hub.Lookup("online")
	require.NotNil(t, onP, "an attached participant is not removed")
	assert.False(t, th.listener.heardGone("online"))
	assert.Equal(t, []*Participant{onP}, th.hub.SessionMembers("s1"))
	assert.Equal(t, 1, th.hub.Count())
	th.deliver("online", numberedEvent(1))
	on.nextEvent(1)

	// Once it detaches its window starts, and it goes too.
	require.NoError(t, on.conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return th.hub.Lookup("online") == nil }, 10*time.Second, time.Millisecond)
	assert.True(t, th.listener.heardGone("online"))
	assert.Empty(t, th.hub.SessionMembers("s1"))
	assert.Equal(t, 0, th.hub.Count())
	assert.Equal(t, float64(0), counterValue(t, th.hub.cfg.Metrics.Participants))
}

func TestOfflineParticipantKeepsEventsWithinTTL(t *testing.T) {
	clock := &fakeClock{now: t0}
	th := newTestHub(t, Config{OfflineTTL: time.Minute, MailboxTTL: time.Hour, SweepInterval: time.Millisecond, Now: clock.Now})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	clock.Add(59 * time.Second)
	ev := NewEvent("e1", "s1", json.RawMessage(`{}`), clock.Now())
	th.deliver("alice", ev)
	// A Join restarts an offline participant's window: at t0+118s alice,
	// offline since t0, would be gone without it.
	require.NoError(t, th.hub.Join("alice", "ai", "s2"))
	clock.Add(59 * time.Second)
	cl, w := th.attach("alice", nil)
	assert.Equal(t, uint64(1), w.Seq)
	cl.nextEvent(1)
}

func TestMailboxTTLExpiry(t *testing.T) {
	clock := &fakeClock{now: t0}
	th := newTestHub(t, Config{MailboxTTL: time.Minute, OfflineTTL: time.Hour, SweepInterval: 5 * time.Millisecond, Now: clock.Now})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	p := th.participant("alice")
	at := func(n int) *Event {
		return NewEvent(fmt.Sprintf("e%d", n), "s1", json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)), clock.Now())
	}
	th.deliver("alice", at(1), at(2), at(3))
	clock.Add(30 * time.Second)
	th.deliver("alice", at(4), at(5))

	// The sweeper drops what is older than the TTL.
	clock.Add(31 * time.Second)
	require.Eventually(t, func() bool { o, _, _ := boxState(p); return o == 4 }, 10*time.Second, time.Millisecond)
	_, newest, n := boxState(p)
	assert.Equal(t, uint64(5), newest)
	assert.Equal(t, 2, n)
	assert.Equal(t, float64(2), counterValue(t, th.hub.cfg.Metrics.MailboxEvents))

	cl, w := th.attach("alice", q("resume_from", "0"))
	assert.Equal(t, uint64(5), w.Seq)
	cl.nextGap(1, 3)
	cl.nextEvent(4)
	cl.nextEvent(5)

	// Everything expires: the mailbox is empty and gives back its ring.
	clock.Add(time.Hour)
	require.Eventually(t, func() bool { _, _, n := boxState(p); return n == 0 }, 10*time.Second, time.Millisecond)
	p.mu.Lock()
	ringNil := p.box.ring == nil
	p.mu.Unlock()
	assert.True(t, ringNil, "an expired mailbox releases its memory")
	assert.Equal(t, float64(0), counterValue(t, th.hub.cfg.Metrics.MailboxEvents))

	// Deliver expires too, by the new event's time, and seqs go on.
	th.deliver("alice", at(6))
	cl.nextEvent(6)
	clock.Add(2 * time.Minute)
	th.deliver("alice", at(7))
	cl.nextEvent(7)
	oldest, newest, n := boxState(p)
	assert.Equal(t, []any{uint64(7), uint64(7), 1}, []any{oldest, newest, n})
	assert.NotNil(t, th.hub.Lookup("alice"), "an attached participant stays")
}

func TestListenerHearsParticipantChanges(t *testing.T) {
	th := newTestHub(t, Config{})
	l := th.listener
	require.NoError(t, th.hub.Join("alice", "human", "s1"))
	info, ok := l.last("alice")
	require.True(t, ok, "Join announces")
	assert.Equal(t, ParticipantInfo{ID: "alice", Type: "human", Sessions: []string{"s1"}, Online: false}, info)

	n := len(l.about("alice"))
	require.NoError(t, th.hub.Join("alice", "human", "s1"))
	assert.Len(t, l.about("alice"), n, "joining a session again changes nothing and announces nothing")

	a, _ := th.attach("alice", q("session_id", "s2"))
	info, _ = l.last("alice")
	assert.Equal(t, ParticipantInfo{ID: "alice", Type: "human", Sessions: []string{"s1", "s2"}, Online: true}, info)

	b, _ := th.attach("alice", nil)
	require.True(t, th.hub.Leave("alice", "s1"))
	assert.False(t, th.hub.Leave("alice", "s1"), "not a member any more")
	assert.False(t, th.hub.Leave("nobody", "s1"))
	info, _ = l.last("alice")
	assert.Equal(t, ParticipantInfo{ID: "alice", Type: "human", Sessions: []string{"s2"}, Online: true}, info)

	// One of two connections going leaves it online.
	require.NoError(t, a.conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return len(connCloseCodes(th.participant("alice"))) == 1 }, 10*time.Second, time.Millisecond)
	info, _ = l.last("alice")
	assert.True(t, info.Online)

	require.NoError(t, b.conn.Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { info, _ := l.last("alice"); return !info.Online }, 10*time.Second, time.Millisecond)
	info, _ = l.last("alice")
	assert.Equal(t, ParticipantInfo{ID: "alice", Type: "human", Sessions: []string{"s2"}, Online: false}, info)
	assert.Equal(t, info, th.participant("alice").Info())

	for _, in := range l.about("alice") {
		assert.True(t, slices.IsSorted(in.Sessions), "sessions are sorted: %v", in.Sessions)
	}
	assert.False(t, l.heardGone("alice"))
}

func TestMaxSessionsPerParticipant(t *testing.T) {
	th := newTestHub(t, Config{MaxSessionsPerParticipant: 2})
	require.NoError(t, th.hub.Join("alice", "ai", "s1"))
	require.NoError(t, th.hub.Join("alice", "ai", "s2"))
	assert.ErrorIs(t, th.hub.Join("alice", "ai", "s3"), ErrTooManySessions)
	assert.NoError(t, th.hub.Join("alice", "ai", "s1"), "a session already joined is fine")
	assert.Equal(t, []string{"s1", "s2"}, th.participant("alice").Info().Sessions)
	assert.Empty(t, th.hub.SessionMembers("s3"))
	require.True(t, th.hub.Leave("alice", "s1"))
	assert.NoError(t, th.hub.Join("alice", "ai", "s3"), "room again after a leave")

	// An attach asking for too many sessions joins what fits and says so.
	cl, w := th.attach("bob", q("session_id", "a", "session_id", "b", "session_id", "c"))
	assert.Len(t, w.Sessions, 2)
	f := cl.next()
	require.Equal(t, "error", f.Type, "frame %s", f.Raw)
	assert.Equal(t, "too_many_sessions", f.Code)
}

func TestOrderingUnderConcurrentDelivery(t *testing.T) {
	const goroutines, perG = 4, 2000
	for _, batch := range []string{"0", "1"} {
		t.Run("batch="+batch, func(t *testing.T) {
			th := newTestHub(t, Config{MailboxSize: goroutines * perG})
			cl, _ := th.attach("alice", q("batch", batch))
			p := th.participant("alice")
			var wg sync.WaitGroup
			var failed atomic.Bool
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < perG; n++ {
						ev := bodyEvent(fmt.Sprintf("g%d-%d", g, n), "s1", fmt.Sprintf(`{"g":%d,"n":%d}`, g, n))
						if !th.hub.Deliver(p, ev).Accepted() {
							failed.Store(true)
						}
					}
				}()
			}
			next := make([]int, goroutines)
			for seq := uint64(1); seq <= goroutines*perG; seq++ {
				f := cl.nextEvent(seq)
				var body struct{ G, N int }
				require.NoError(t, json.Unmarshal(f.Event, &body))
				require.Less(t, body.G, goroutines)
				require.Equal(t, next[body.G], body.N, "goroutine %d's events out of order at seq %d", body.G, seq)
				require.Equal(t, fmt.Sprintf("g%d-%d", body.G, body.N), f.EventID)
				next[body.G]++
			}
			wg.Wait()
			assert.False(t, failed.Load())
			for g := range next {
				assert.Equal(t, perG, next[g])
			}
			require.NoError(t, cl.conn.Close(websocket.StatusNormalClosure, ""))
		})
	}
}
