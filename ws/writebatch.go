package ws

import (
	"sync"

	"github.com/coder/websocket"
)

// batch is what one pass of the write loop takes from the participant.
type batch struct {
	ping   bool // a ping frame goes first
	ctrl   [][]byte
	events []entry
	close  websocket.StatusCode // close once this batch is written (0: no)
}

// empty reports whether b has nothing to write.
func (b *batch) empty() bool { return !b.ping && len(b.ctrl) == 0 && len(b.events) == 0 }

// pingFrame is a ping with no payload (RFC 6455, section 5.5.2): final,
// opcode 9, unmasked, length 0.
var pingFrame = []byte{0x80 | 0x9, 0}

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
	b.ctrl, b.events, b.close, b.ping = b.ctrl[:0], b.events[:0], 0, false
}

// collect moves what is ready for w into b, advancing w's cursor. When
// there is nothing to do it marks the writer gone, under the same lock that
// wakeUpLocked takes, and b comes back empty.
func (w *writer) collect(b *batch) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	b.ctrl = append(b.ctrl[:0], w.ctrl...)
	clear(w.ctrl)
	w.ctrl = w.ctrl[:0]
	b.events = b.events[:0]
	b.close = 0
	b.ping, w.pingDue = w.pingDue, false
	switch {
	case w.stopped:
		b.ctrl, b.ping = b.ctrl[:0], false
		w.writerRunning = false
		return
	case w.closeCode == closeSlowConsumer:
		b.ctrl, b.ping = b.ctrl[:0], false // nothing more for a connection that cannot keep up
		b.close = w.closeCode
		w.stopped = true
		return
	}
	if oldest := p.box.oldest(); w.next < oldest {
		b.ctrl = append(b.ctrl, mustJSON(gapFrame{Type: "gap", FromSeq: w.next, ToSeq: oldest - 1}))
		w.next = oldest
	}
	b.events = p.box.copyFrom(w.next, b.events, w.cfg.MaxBatchBytes)
	if n := len(b.events); n > 0 {
		w.next = b.events[n-1].seq + 1
		w.sentCum = max(w.sentCum, b.events[n-1].cum)
	}
	if b.empty() {
		if b.close = w.closeCode; b.close != 0 {
			w.stopped = true
		} else {
			w.writerRunning = false
		}
	}
}

// write sends b in one write to the socket: its ping first, then one
// WebSocket message per frame, or, when the client allows batching,
// newline-joined messages of at most MaxBatchBytes.
func (w *writer) write(b *batch, began int64) error {
	bufp := writeBuffers.Get().(*[]byte)
	buf := (*bufp)[:0]
	if b.ping {
		buf = append(buf, pingFrame...)
	}
	if w.batch {
		buf = w.appendBatched(buf, b)
	} else {
		for _, f := range b.ctrl {
			buf = append(appendFrameHeader(buf, len(f)), f...)
		}
		for _, e := range b.events {
			buf = e.ev.appendFrame(appendFrameHeader(buf, e.ev.frameSize(e.seq)), e.seq)
		}
	}
	w.writingSince.Store(began)
	err := w.raw.writeData(buf)
	w.writingSince.Store(0)
	if cap(buf) <= 4*w.cfg.MaxBatchBytes { // do not let one huge frame pin memory
		*bufp = buf
		writeBuffers.Put(bufp)
	}
	return err
}

// appendBatched appends b's frames as newline-joined messages, starting a
// new message when one would pass MaxBatchBytes.
func (w *writer) appendBatched(buf []byte, b *batch) []byte {
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
		for j < frames && n+1+size(j) <= w.cfg.MaxBatchBytes {
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
