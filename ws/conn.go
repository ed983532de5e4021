package ws

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Close codes of SPEC section 3.
const (
	closeNormal       = websocket.StatusNormalClosure // 1000
	closeGoingAway    = websocket.StatusGoingAway     // 1001: node draining
	closeSlowConsumer = websocket.StatusCode(4000)
)

// Backend answers the client frames that need the gateway core. Each method
// returns what the matching REST call would answer.
type Backend interface {
	Submit(ctx context.Context, who Identity, event json.RawMessage) Reply
	Join(ctx context.Context, who Identity, session string) Reply
	Leave(ctx context.Context, who Identity, session string) Reply
}

// Identity is who a connection speaks for.
type Identity struct {
	ParticipantID   string
	ParticipantType string
	// Credential is what authenticated the connection, opaque to this
	// package; the Backend uses it to decide what the connection may do.
	Credential any
	// RateKey names the connection's credential for the Backend's rate
	// limit (never the secret itself), computed at attach; opaque to this
	// package.
	RateKey string
}

// Reply is a REST-shaped answer: the status and the JSON body. For an error,
// Code and Detail repeat the body's fields for the error frame.
type Reply struct {
	Status int
	Body   json.RawMessage
	Code   string
	Detail string
}

// AttachRequest is a validated WebSocket attach.
type AttachRequest struct {
	Identity
	Sessions   []string
	ResumeFrom *uint64 // nil: start after the last event written to an earlier connection
	Batch      bool    // the client takes several newline-separated frames per message
	// CredentialKey groups connections for MaxConnectionsPerCredential
	// (never the secret itself); empty: the connection is not counted
	// against any credential.
	CredentialKey string
}

// conn is one WebSocket connection of a participant. Its fields below mu are
// guarded by the participant's lock: the mailbox and the cursor move together.
//
// A connection has one reader goroutine for its whole life and a writer
// goroutine only while it has something to write: the writer is started by
// whoever queues work for an idle connection and exits once everything is
// written, so an idle connection holds no writer stack and no write buffer.
type conn struct {
	ws    *websocket.Conn
	raw   *guardedConn // the hijacked socket: data frames are written to it directly
	p     *Participant
	hub   *Hub
	who   Identity
	batch bool

	credKey string // AttachRequest.CredentialKey: the count admit took a share of

	// writingSince is when the write in progress began (UnixNano), 0 when
	// none is; the hub's sweeper cuts writes older than WriteTimeout. A
	// deadline per write would arm a timer each time.
	writingSince atomic.Int64
	writers      sync.WaitGroup // the writer goroutine, while one runs

	// guarded by p.mu
	next          uint64   // next seq to hand to the socket
	sentCum       uint64   // mailbox byte total through next-1, or at start if later
	ctrl          [][]byte // queued control frames (welcome, result, error, gap)
	closeCode     websocket.StatusCode
	writerRunning bool  // a writer runs and will look again before exiting (stays set once closing)
	lastWrite     int64 // when the last write began (UnixNano): is the connection busy?
	held          bool  // no writer yet: the welcome waits for BeforeWelcome
	stopped       bool  // the reader ended or a close was written: no new writer
}

// Attach upgrades the request and starts serving the connection. It returns
// before upgrading with ErrDraining, ErrTooManyConnections,
// ErrTooManyParticipantConnections, ErrTooManyCredentialConnections or
// ErrParticipantMoved, and otherwise once the connection is served by its
// own goroutine, so that the HTTP server's goroutine and request are not
// held for the connection's life. Shutdown waits for the connection to end.
func (h *Hub) Attach(w http.ResponseWriter, r *http.Request, req AttachRequest, opts *websocket.AcceptOptions, maxConns int) error {
	if err := h.admit(req, maxConns); err != nil {
		return err
	}
	if p := h.Lookup(req.ParticipantID); p != nil && !p.awaitTakeover(r.Context()) {
		h.unadmit(req)
		return ErrParticipantMoved
	}
	hj := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hj, r, opts)
	if err != nil {
		h.unadmit(req)
		return err // Accept has answered the client
	}
	ws.SetReadLimit(h.cfg.MaxFrameBytes)
	c := &conn{ws: ws, raw: hj.conn, hub: h, who: req.Identity, credKey: req.CredentialKey, batch: req.Batch, held: true}
	c.start(req)

	h.connMu.Lock()
	h.upgrading--
	h.conns[c] = struct{}{}
	draining := h.draining
	h.connMu.Unlock()
	h.cfg.Metrics.Connections.Inc()
	if draining { // Shutdown began while we upgraded and did not see c
		c.requestClose(closeGoingAway)
	}
	if h.cfg.BeforeWelcome != nil {
		h.cfg.BeforeWelcome(r.Context())
	}
	c.release()
	go c.serve()
	return nil
}

// serve is the connection's reader goroutine; when the client goes, it
// stops the writer and unbinds the connection.
func (c *conn) serve() {
	h := c.hub
	defer h.connWG.Done()
	c.readLoop()
	c.stopWriter()
	h.detach(c)
	h.forget(c)
	h.cfg.Metrics.Connections.Dec()
}

func (h *Hub) forget(c *conn) {
	h.connMu.Lock()
	delete(h.conns, c)
	h.releaseLocked(c.who.ParticipantID, c.credKey)
	h.connMu.Unlock()
}

// admit takes a connection slot for req, or says why there is none: the
// node is draining, holds maxConns connections (0: no bound), or req's
// participant or credential holds its maximum. The counts are checked and
// taken under one lock, so two attaches cannot both take the last slot.
// The slot is given back by releaseLocked when the connection ends.
func (h *Hub) admit(req AttachRequest, maxConns int) error {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	perParticipant, perCredential := h.cfg.MaxConnectionsPerParticipant, h.cfg.MaxConnectionsPerCredential
	switch {
	case h.draining:
		return ErrDraining
	case maxConns > 0 && len(h.conns)+h.upgrading >= maxConns:
		return ErrTooManyConnections
	case perParticipant > 0 && h.participantConns[req.ParticipantID] >= perParticipant:
		return ErrTooManyParticipantConnections
	case perCredential > 0 && req.CredentialKey != "" && h.credentialConns[req.CredentialKey] >= perCredential:
		return ErrTooManyCredentialConnections
	}
	h.upgrading++ // holds a slot; Shutdown only sees connections once started
	h.participantConns[req.ParticipantID]++
	if req.CredentialKey != "" {
		h.credentialConns[req.CredentialKey]++
	}
	h.connWG.Add(1)
	return nil
}

// unadmit gives back the slot admit took for req, for an attach that did
// not start a connection.
func (h *Hub) unadmit(req AttachRequest) {
	h.connMu.Lock()
	h.upgrading--
	h.releaseLocked(req.ParticipantID, req.CredentialKey)
	h.connMu.Unlock()
	h.connWG.Done()
}

// releaseLocked gives back the participant's and the credential's share of
// a slot admit took; counts that reach zero are deleted, so the maps hold
// only keys with a connection (at most maxConns of each). connMu is held.
func (h *Hub) releaseLocked(participant, credential string) {
	if h.participantConns[participant]--; h.participantConns[participant] <= 0 {
		delete(h.participantConns, participant)
	}
	if credential == "" {
		return
	}
	if h.credentialConns[credential]--; h.credentialConns[credential] <= 0 {
		delete(h.credentialConns, credential)
	}
}

// start binds c to its participant, positions its cursor and queues the
// welcome frame.
func (c *conn) start(req AttachRequest) {
	h := c.hub
	for {
		p, _ := h.getOrCreate(req.ParticipantID, req.ParticipantType)
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			continue
		}
		var joinErr error
		for _, s := range req.Sessions {
			if err := h.joinLocked(p, s); err != nil {
				joinErr = err
			}
		}
		newest := p.box.newest()
		start := p.lastWritten + 1
		if req.ResumeFrom != nil {
			start = min(*req.ResumeFrom, newest) + 1
		}
		// The backlog a connection starts with is not "falling behind":
		// only bytes accepted after it started count against its write
		// queue, so a client resuming from far back is not cut at once.
		c.p, c.next, c.sentCum = p, start, p.box.total
		c.ctrl = append(c.ctrl, mustJSON(welcomeFrame{
			Type: "welcome", ParticipantID: p.id, Node: h.cfg.Node,
			Sessions: p.sortedSessionsLocked(), Seq: newest, Resumed: start <= newest,
		}))
		if joinErr != nil {
			c.ctrl = append(c.ctrl, mustJSON(errorFrame{Type: "error", Code: "too_many_sessions",
				Detail: "some sessions were not joined: " + joinErr.Error()}))
		}
		p.conns = append(p.conns, c)
		h.announceLocked(p)
		p.mu.Unlock()
		return
	}
}

// detach unbinds c from its participant; the participant's offline window
// starts when its last connection goes.
func (h *Hub) detach(c *conn) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	if len(p.conns) == 0 {
		p.offlineSince = h.cfg.Now()
	}
	h.announceLocked(p)
}

// wakeUpLocked makes sure a writer will look at c's queue: it starts one
// unless one runs (it will look again before exiting) or c is held or
// stopped. p.mu is held, which is what makes "nothing left, exit" and "new
// work, no writer" exclude each other. A writer started for control frames
// (welcome, results, closes) writes at once; one started for events may
// wait the coalescing window first (a control frame queued meanwhile waits
// with the events).
func (c *conn) wakeUpLocked() { c.startWriterLocked(0) }

func (c *conn) startWriterLocked(wait time.Duration) {
	if c.writerRunning || c.held || c.stopped {
		return
	}
	c.writerRunning = true
	c.writers.Add(1)
	go c.writeLoop(wait)
}

// release lets the writer start: the welcome frame may go.
func (c *conn) release() {
	c.p.mu.Lock()
	c.held = false
	c.wakeUpLocked()
	c.p.mu.Unlock()
}

// stopWriter keeps new writers from starting, unblocks a write in progress
// by closing the socket, and waits for the writer to exit.
func (c *conn) stopWriter() {
	c.p.mu.Lock()
	c.stopped = true
	c.p.mu.Unlock()
	_ = c.ws.CloseNow()
	c.writers.Wait()
}

// notifyLocked tells c that its participant's mailbox grew; p.mu is held.
func (c *conn) notifyLocked(h *Hub) {
	if c.closeCode != 0 {
		return
	}
	if c.p.box.total-c.sentCum > uint64(h.cfg.WriteQueueBytes) {
		c.closeCode = closeSlowConsumer
		h.cfg.Metrics.SlowConsumers.Inc()
	}
	c.startWriterLocked(c.coalesceWaitLocked())
}

// busyWindows: a connection that wrote within this many coalescing windows
// is in a stream of events, and its writer waits one window for more; one
// that was quiet longer writes a new event at once. (With a 2 ms window: an
// event after 100 ms of quiet is not delayed.)
const busyWindows = 50

// coalesceWaitLocked is how long a writer woken for an event waits: the
// coalescing window if the connection wrote recently (a stream is flowing,
// more will follow), nothing if it was quiet, so a lone event goes at once.
func (c *conn) coalesceWaitLocked() time.Duration {
	w := c.hub.cfg.CoalesceWindow
	if w <= 0 || c.writerRunning {
		return 0
	}
	if c.hub.cfg.Now().UnixNano()-c.lastWrite > busyWindows*int64(w) {
		return 0
	}
	return w
}

// requestClose asks the writer to close with code once what is queued is
// written (for 4000, at once).
func (c *conn) requestClose(code websocket.StatusCode) {
	c.p.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode = code
	}
	c.wakeUpLocked()
	c.p.mu.Unlock()
}

// queueControl queues a control frame for the writer.
func (c *conn) queueControl(frame []byte) {
	c.p.mu.Lock()
	if len(c.ctrl) >= c.hub.cfg.MaxControlFrames {
		if c.closeCode == 0 {
			c.closeCode = closeSlowConsumer
			c.hub.cfg.Metrics.SlowConsumers.Inc()
		}
	} else {
		c.ctrl = append(c.ctrl, frame)
	}
	c.wakeUpLocked()
	c.p.mu.Unlock()
}

// batch is what one pass of the write loop takes from the participant.
type batch struct {
	ctrl   [][]byte
	events []entry
	close  websocket.StatusCode // close once this batch is written (0: no)
}

// batches pools the batch a writer collects into: writers come and go with
// the work, and their slices would otherwise be allocated at every start.
var batches = sync.Pool{New: func() any { return new(batch) }}

// release resets b and returns it to the pool.
func (b *batch) release() {
	b.reset()
	batches.Put(b)
}

// reset clears b's references, so that events stay alive through their
// mailboxes only. collect truncates the slices: what they held beyond their
// length is cleared too.
func (b *batch) reset() {
	clear(b.ctrl[:cap(b.ctrl)])
	clear(b.events[:cap(b.events)])
	b.ctrl, b.events, b.close = b.ctrl[:0], b.events[:0], 0
}

// collect moves what is ready for c into b, advancing c's cursor. When
// there is nothing to do it marks the writer gone, under the same lock that
// wakeUpLocked takes, and b comes back empty.
func (c *conn) collect(b *batch) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	b.ctrl = append(b.ctrl[:0], c.ctrl...)
	clear(c.ctrl)
	c.ctrl = c.ctrl[:0]
	b.events = b.events[:0]
	b.close = 0
	switch {
	case c.stopped:
		b.ctrl = b.ctrl[:0]
		c.writerRunning = false
		return
	case c.closeCode == closeSlowConsumer:
		b.ctrl = b.ctrl[:0] // nothing more for a connection that cannot keep up
		b.close = c.closeCode
		c.stopped = true
		return
	}
	if oldest := p.box.oldest(); c.next < oldest {
		b.ctrl = append(b.ctrl, mustJSON(gapFrame{Type: "gap", FromSeq: c.next, ToSeq: oldest - 1}))
		c.next = oldest
	}
	b.events = p.box.copyFrom(c.next, b.events, c.hub.cfg.MaxBatchBytes)
	if n := len(b.events); n > 0 {
		c.next = b.events[n-1].seq + 1
		c.sentCum = max(c.sentCum, b.events[n-1].cum)
	}
	if len(b.ctrl) == 0 && len(b.events) == 0 {
		if b.close = c.closeCode; b.close != 0 {
			c.stopped = true
		} else {
			c.writerRunning = false
		}
	}
}

// writeLoop writes everything ready for c, then exits; wakeUpLocked starts
// it again when more comes. It first waits wait (the coalescing window), so
// that events arriving meanwhile leave in the same write.
func (c *conn) writeLoop(wait time.Duration) {
	defer c.writers.Done()
	if wait > 0 {
		time.Sleep(wait)
	}
	b := batches.Get().(*batch)
	defer b.release()
	for {
		c.collect(b)
		if b.close != 0 {
			c.closeWith(b.close)
			return
		}
		if len(b.ctrl) == 0 && len(b.events) == 0 {
			return // collect marked the writer gone
		}
		began := c.hub.cfg.Now().UnixNano()
		if err := c.write(b, began); err != nil {
			_ = c.ws.CloseNow()
			c.p.mu.Lock()
			c.stopped, c.writerRunning = true, false
			c.p.mu.Unlock()
			return
		}
		var last uint64
		if n := len(b.events); n > 0 {
			last = b.events[n-1].seq
			c.hub.cfg.Metrics.Deliveries.Add(float64(n))
		}
		c.noteWritten(last, began)
	}
}

func (c *conn) closeWith(code websocket.StatusCode) {
	reason := "closing"
	switch code {
	case closeSlowConsumer:
		reason = "slow consumer: reconnect with resume_from"
	case closeGoingAway:
		reason = "node draining: reconnect with resume_from"
	}
	_ = c.ws.Close(code, reason)
}

// write sends b in one write to the socket: one WebSocket message per frame,
// or, when the client allows batching, newline-joined messages of at most
// MaxBatchBytes.
func (c *conn) write(b *batch, began int64) error {
	bufp := writeBuffers.Get().(*[]byte)
	buf := (*bufp)[:0]
	if c.batch {
		buf = c.appendBatched(buf, b)
	} else {
		for _, f := range b.ctrl {
			buf = append(appendFrameHeader(buf, len(f)), f...)
		}
		for _, e := range b.events {
			buf = e.ev.appendFrame(appendFrameHeader(buf, e.ev.frameSize(e.seq)), e.seq)
		}
	}
	c.writingSince.Store(began)
	err := c.raw.writeData(buf)
	c.writingSince.Store(0)
	if cap(buf) <= 4*c.hub.cfg.MaxBatchBytes { // do not let one huge frame pin memory
		*bufp = buf
		writeBuffers.Put(bufp)
	}
	return err
}

// appendBatched appends b's frames as newline-joined messages, starting a
// new message when one would pass MaxBatchBytes.
func (c *conn) appendBatched(buf []byte, b *batch) []byte {
	frames := len(b.ctrl) + len(b.events)
	size := func(i int) int {
		if i < len(b.ctrl) {
			return len(b.ctrl[i])
		}
		e := b.events[i-len(b.ctrl)]
		return e.ev.frameSize(e.seq)
	}
	for i := 0; i < frames; {
		n, j := size(i), i+1 // the message holds frames i..j-1: n bytes
		for j < frames && n+1+size(j) <= c.hub.cfg.MaxBatchBytes {
			n += 1 + size(j)
			j++
		}
		buf = appendFrameHeader(buf, n)
		for k := i; k < j; k++ {
			if k > i {
				buf = append(buf, '\n')
			}
			if k < len(b.ctrl) {
				buf = append(buf, b.ctrl[k]...)
			} else {
				e := b.events[k-len(b.ctrl)]
				buf = e.ev.appendFrame(buf, e.seq)
			}
		}
		i = j
	}
	return buf
}

// noteWritten records a write that began at began: the participant's newest
// seq written (when it carried events, seq > 0) and, for the coalescing
// window, when c last wrote. Without either there is nothing to record.
func (c *conn) noteWritten(seq uint64, began int64) {
	if seq == 0 && c.hub.cfg.CoalesceWindow <= 0 {
		return
	}
	p := c.p
	p.mu.Lock()
	if seq > p.lastWritten {
		p.lastWritten = seq
	}
	c.lastWrite = began
	p.mu.Unlock()
}

// readLoop reads client frames until the connection fails or closes.
func (c *conn) readLoop() {
	ctx := context.Background()
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			if s := websocket.CloseStatus(err); s == -1 && !errors.Is(err, context.Canceled) {
				c.hub.log.Debug("websocket read ended", "participant", c.p.id, "err", err)
			}
			return
		}
		c.handle(ctx, data)
	}
}

func (c *conn) handle(ctx context.Context, data []byte) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		c.sendError("invalid_frame", "the frame is not a JSON object of a known shape: "+err.Error())
		return
	}
	switch f.Type {
	case "submit":
		if len(f.Event) == 0 || string(f.Event) == "null" {
			c.answer(f.ID, errorReply(http.StatusUnprocessableEntity, "missing_field", "event", "a submit frame needs an event object"))
			return
		}
		c.answer(f.ID, c.hub.cfg.Backend.Submit(ctx, c.who, f.Event))
	case "join":
		c.answer(f.ID, c.hub.cfg.Backend.Join(ctx, c.who, f.SessionID))
	case "leave":
		c.answer(f.ID, c.hub.cfg.Backend.Leave(ctx, c.who, f.SessionID))
	case "ack":
		if f.Seq == nil {
			c.answer(f.ID, errorReply(http.StatusUnprocessableEntity, "missing_field", "seq", "an ack frame needs a seq"))
			return
		}
		c.hub.ack(c.p, *f.Seq)
		if f.ID != "" {
			c.answer(f.ID, Reply{Status: http.StatusOK, Body: json.RawMessage(`{"status":"ok"}`)})
		}
	case "":
		c.sendError("missing_type", "every frame needs a type: submit, join, leave or ack")
	default:
		c.sendError("unknown_type", "unknown frame type "+quote(f.Type)+"; use submit, join, leave or ack")
	}
}

// answer sends a result frame for a frame with an id; without an id only a
// failure is reported, as an error frame.
func (c *conn) answer(id string, r Reply) {
	if id != "" {
		c.queueControl(mustJSON(resultFrame{Type: "result", ID: id, Status: r.Status, Body: r.Body}))
		return
	}
	if r.Status >= 300 {
		c.sendError(r.Code, r.Detail)
	}
}

func (c *conn) sendError(code, detail string) {
	c.queueControl(mustJSON(errorFrame{Type: "error", Code: code, Detail: detail}))
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// errorReply builds a Reply with the gateway's error body.
func errorReply(status int, code, field, detail string) Reply {
	body := map[string]string{"status": "error", "code": code, "detail": detail}
	if field != "" {
		body["field"] = field
	}
	return Reply{Status: status, Body: mustJSON(body), Code: code, Detail: detail}
}
