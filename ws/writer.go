package ws

import (
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

// writer is the sending side of one connection: a cursor into its
// participant's mailbox, a short queue of control frames, the close code to
// end with, and the goroutine that writes them.
//
// The goroutine runs only while there is something to write: whoever queues
// work for an idle writer starts one (wakeUpLocked), and it exits once
// everything is written, so an idle connection holds no writer stack and no
// write buffer. Its API, for the hub and the connection's reader:
//
//   - release: the first write (the welcome) may go.
//   - queueControl, notifyLocked (the mailbox grew), requestClose,
//     requestPing: more to write.
//   - stopWriter: the connection is over; no write starts again.
//   - writingSince: when the write in progress began, for the hub's
//     deadline sweeper.
//
// Its fields below the mutex line are guarded by the participant's lock:
// the mailbox and the cursor move together.
type writer struct {
	ws    *websocket.Conn
	raw   *guardedConn // the hijacked socket: data frames are written to it directly
	p     *Participant // whose mailbox the cursor points into
	cfg   *Config      // the hub's
	batch bool         // the client takes several newline-separated frames per message

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
	pingDue       bool  // the keepalive asked for a ping frame
}

// wakeUpLocked makes sure a writer will look at w's queue: it starts one
// unless one runs (it will look again before exiting) or w is held or
// stopped. p.mu is held, which is what makes "nothing left, exit" and "new
// work, no writer" exclude each other. A writer started for control frames
// (welcome, results, closes) writes at once; one started for events may
// wait the coalescing window first (a control frame queued meanwhile waits
// with the events).
func (w *writer) wakeUpLocked() { w.startWriterLocked(0) }

func (w *writer) startWriterLocked(wait time.Duration) {
	if w.writerRunning || w.held || w.stopped {
		return
	}
	w.writerRunning = true
	w.writers.Add(1)
	go w.writeLoop(wait)
}

// release lets the writer start: the welcome frame may go.
func (w *writer) release() {
	w.p.mu.Lock()
	w.held = false
	w.wakeUpLocked()
	w.p.mu.Unlock()
}

// stopWriter keeps new writers from starting, unblocks a write in progress
// by closing the socket, and waits for the writer to exit.
func (w *writer) stopWriter() {
	w.p.mu.Lock()
	w.stopped = true
	w.p.mu.Unlock()
	_ = w.ws.CloseNow()
	w.writers.Wait()
}

// notifyLocked tells w that its participant's mailbox grew; p.mu is held.
func (w *writer) notifyLocked() {
	if w.closeCode != 0 {
		return
	}
	if w.p.box.total-w.sentCum > uint64(w.cfg.WriteQueueBytes) {
		w.closeCode = closeSlowConsumer
		w.cfg.Metrics.SlowConsumers.Inc()
	}
	w.startWriterLocked(w.coalesceWaitLocked())
}

// busyWindows: a connection that wrote within this many coalescing windows
// is in a stream of events, and its writer waits one window for more; one
// that was quiet longer writes a new event at once. (With a 2 ms window: an
// event after 100 ms of quiet is not delayed.)
const busyWindows = 50

// coalesceWaitLocked is how long a writer woken for an event waits: the
// coalescing window if the connection wrote recently (a stream is flowing,
// more will follow), nothing if it was quiet, so a lone event goes at once.
func (w *writer) coalesceWaitLocked() time.Duration {
	win := w.cfg.CoalesceWindow
	if win <= 0 || w.writerRunning {
		return 0
	}
	if w.cfg.Now().UnixNano()-w.lastWrite > busyWindows*int64(win) {
		return 0
	}
	return win
}

// requestClose asks the writer to close with code once what is queued is
// written (for 4000, at once).
func (w *writer) requestClose(code websocket.StatusCode) {
	w.p.mu.Lock()
	if w.closeCode == 0 {
		w.closeCode = code
	}
	w.wakeUpLocked()
	w.p.mu.Unlock()
}

// queueControl queues a control frame for the writer.
func (w *writer) queueControl(frame []byte) {
	w.p.mu.Lock()
	if len(w.ctrl) >= w.cfg.MaxControlFrames {
		if w.closeCode == 0 {
			w.closeCode = closeSlowConsumer
			w.cfg.Metrics.SlowConsumers.Inc()
		}
	} else {
		w.ctrl = append(w.ctrl, frame)
	}
	w.wakeUpLocked()
	w.p.mu.Unlock()
}

// requestPing asks the writer to send a ping frame with its next write
// (at once if it is idle). The ping goes out through the writer, not
// coder/websocket's Ping, which would hold a goroutine per connection
// until the pong; the pong is heard by the reader (keepalive.go).
func (w *writer) requestPing() {
	w.p.mu.Lock()
	w.pingDue = true
	w.wakeUpLocked()
	w.p.mu.Unlock()
}

// writeLoop writes everything ready for w, then exits; wakeUpLocked starts
// it again when more comes. It first waits wait (the coalescing window), so
// that events arriving meanwhile leave in the same write.
func (w *writer) writeLoop(wait time.Duration) {
	defer w.writers.Done()
	if wait > 0 {
		time.Sleep(wait)
	}
	b := batches.Get().(*batch)
	defer b.release()
	for {
		w.collect(b)
		if b.close != 0 {
			w.closeWith(b.close)
			return
		}
		if b.empty() {
			return // collect marked the writer gone
		}
		began := w.cfg.Now().UnixNano()
		if err := w.write(b, began); err != nil {
			_ = w.ws.CloseNow()
			w.p.mu.Lock()
			w.stopped, w.writerRunning = true, false
			w.p.mu.Unlock()
			return
		}
		if len(b.ctrl) == 0 && len(b.events) == 0 {
			continue // only a ping: not a write the coalescing window counts
		}
		var last uint64
		if n := len(b.events); n > 0 {
			last = b.events[n-1].seq
			w.cfg.Metrics.Deliveries.Add(float64(n))
		}
		w.noteWritten(last, began)
	}
}

func (w *writer) closeWith(code websocket.StatusCode) {
	reason := "closing"
	switch code {
	case closeSlowConsumer:
		reason = "slow consumer: reconnect with resume_from"
	case closeGoingAway:
		reason = "node draining: reconnect with resume_from"
	}
	_ = w.ws.Close(code, reason)
}

// noteWritten records a write that began at began: the participant's newest
// seq written (when it carried events, seq > 0) and, for the coalescing
// window, when w last wrote. Without either there is nothing to record.
func (w *writer) noteWritten(seq uint64, began int64) {
	if seq == 0 && w.cfg.CoalesceWindow <= 0 {
		return
	}
	p := w.p
	p.mu.Lock()
	if seq > p.lastWritten {
		p.lastWritten = seq
	}
	w.lastWrite = began
	p.mu.Unlock()
}
