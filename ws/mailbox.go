package ws

import "time"

// entry is one slot of a mailbox: the event, the sequence number it got for
// this participant, and the running total of frame bytes up to and including
// it (so that a connection's backlog in bytes is one subtraction).
type entry struct {
	seq uint64
	ev  *Event
	cum uint64
}

// mailbox is a participant's bounded log of recent events: a ring that grows
// on demand up to max entries, so an idle participant costs almost nothing.
// It is not safe for concurrent use; the owning participant's lock guards it.
type mailbox struct {
	ring    []entry
	head    int    // index of the oldest entry
	n       int    // entries held
	max     int    // capacity bound (--mailbox-size)
	nextSeq uint64 // seq the next appended event gets; seqs start at 1
	total   uint64 // cumulative frame bytes of everything ever appended
	// held counts the bytes of the events and slots held against the
	// node's mailbox budget (budget.go); nil: not counted.
	held *byteCount
}

func newMailbox(max int) mailbox { return mailbox{max: max, nextSeq: 1} }

// newest is the last seq assigned (0 when none).
func (m *mailbox) newest() uint64 { return m.nextSeq - 1 }

// oldest is the seq of the oldest event still held, or nextSeq when empty.
func (m *mailbox) oldest() uint64 {
	if m.n == 0 {
		return m.nextSeq
	}
	return m.ring[m.head].seq
}

// append adds ev and returns its seq and how many old entries fell out.
func (m *mailbox) append(ev *Event) (seq uint64, evicted int) {
	if m.n == m.max {
		m.dropOldest()
		evicted = 1
	} else if m.n == len(m.ring) {
		m.grow()
	}
	m.held.hold(ev)
	seq = m.nextSeq
	m.nextSeq++
	m.total += uint64(ev.frameSize(seq))
	m.ring[(m.head+m.n)%len(m.ring)] = entry{seq: seq, ev: ev, cum: m.total}
	m.n++
	return seq, evicted
}

func (m *mailbox) grow() {
	size := len(m.ring) * 2
	if size == 0 {
		size = 4
	}
	if size > m.max {
		size = m.max
	}
	ring := make([]entry, size)
	m.held.add(int64(size-len(m.ring)) * slotBytes)
	for i := 0; i < m.n; i++ {
		ring[i] = m.ring[(m.head+i)%len(m.ring)]
	}
	m.ring, m.head = ring, 0
}

func (m *mailbox) dropOldest() {
	m.held.release(m.ring[m.head].ev)
	m.ring[m.head] = entry{}
	m.head = (m.head + 1) % len(m.ring)
	m.n--
}

// expire drops entries accepted before cutoff and returns how many.
func (m *mailbox) expire(cutoff time.Time) int {
	dropped := 0
	for m.n > 0 && m.ring[m.head].ev.At.Before(cutoff) {
		m.dropOldest()
		dropped++
	}
	if m.n == 0 && len(m.ring) > 0 {
		m.freeRing() // give the memory back while idle
	}
	return dropped
}

func (m *mailbox) freeRing() {
	m.held.add(-int64(len(m.ring)) * slotBytes)
	m.ring, m.head = nil, 0
}

// uncount gives the budget back the bytes of every entry and of the ring,
// when the mailbox is discarded (its participant removed or its state
// replaced), and stops counting it. The entries stay readable: a
// connection of a removed participant may still be writing them.
func (m *mailbox) uncount() {
	if m.held == nil {
		return
	}
	for i := range m.n {
		m.held.release(m.ring[(m.head+i)%len(m.ring)].ev)
	}
	m.held.add(-int64(len(m.ring)) * slotBytes)
	m.held = nil
}

// trimThrough drops entries with seq <= seq (acknowledged and sent everywhere).
func (m *mailbox) trimThrough(seq uint64) int {
	dropped := 0
	for m.n > 0 && m.ring[m.head].seq <= seq {
		m.dropOldest()
		dropped++
	}
	return dropped
}

// cumBefore is the running byte total just before seq, used to start a
// connection's backlog accounting at its first unsent event.
func (m *mailbox) cumBefore(seq uint64) uint64 {
	if m.n == 0 || seq > m.newest() {
		return m.total
	}
	if seq <= m.oldest() {
		e := m.ring[m.head]
		return e.cum - uint64(e.ev.frameSize(e.seq))
	}
	return m.at(seq - 1).cum
}

// at returns the entry for seq, which must be held.
func (m *mailbox) at(seq uint64) entry {
	i := int(seq - m.oldest())
	return m.ring[(m.head+i)%len(m.ring)]
}

// copyFrom appends to dst the entries from seq on, stopping once maxBytes of
// frames are collected (at least one entry is copied when any is available).
func (m *mailbox) copyFrom(seq uint64, dst []entry, maxBytes int) []entry {
	if m.n == 0 || seq > m.newest() {
		return dst
	}
	if seq < m.oldest() {
		seq = m.oldest()
	}
	bytes := 0
	for s := seq; s <= m.newest(); s++ {
		e := m.at(s)
		size := e.ev.frameSize(s)
		if bytes > 0 && bytes+size > maxBytes {
			break
		}
		dst = append(dst, e)
		bytes += size
	}
	return dst
}
