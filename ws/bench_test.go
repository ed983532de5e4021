package ws

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkMailboxAppend measures appending to a full mailbox (the steady
// state: every append evicts the oldest entry) and collecting one entry for
// a writer, under no lock contention.
func BenchmarkMailboxAppend(b *testing.B) {
	m := newMailbox(1024)
	ev := sizedEvent(1, 100, time.Now())
	for range 1024 {
		m.append(ev)
	}
	var dst []entry
	b.ReportAllocs()
	for b.Loop() {
		seq, _ := m.append(ev)
		dst = m.copyFrom(seq, dst[:0], 64<<10)
	}
}

// BenchmarkWriteFrames measures what a writer builds for one write: frames
// of n ready events with their WebSocket headers, one message each or
// newline-joined (batch=1). The socket write itself is left out.
func BenchmarkWriteFrames(b *testing.B) {
	cfg := Config{}.withDefaults()
	for _, batched := range []bool{false, true} {
		for _, n := range []int{1, 16, 256} {
			b.Run("batch="+strconv.FormatBool(batched)+"/events="+strconv.Itoa(n), func(b *testing.B) {
				w := &writer{cfg: &cfg, batch: batched}
				bt := &batch{}
				ev := sizedEvent(1, 100, time.Now())
				for i := range n {
					bt.events = append(bt.events, entry{seq: uint64(i + 1), ev: ev})
				}
				var buf []byte
				b.ReportAllocs()
				for b.Loop() {
					if batched {
						buf = w.appendBatched(buf[:0], bt)
					} else {
						buf = buf[:0]
						for _, e := range bt.events {
							buf = e.ev.appendFrame(appendFrameHeader(buf, e.ev.frameSize(e.seq)), e.seq)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
			})
		}
	}
}
