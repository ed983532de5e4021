package ws

import "time"

// dedupeIndex remembers the (sender_id, event_id) keys of the events a
// participant's mailbox took recently, so that a retried submit, on any
// node, is not delivered twice: the check lives on the recipient's home
// node, which every retry of an event for it reaches. It keeps at most max
// keys (oldest dropped first) and honours them for window. It grows on
// demand; an idle participant costs nothing.
type dedupeIndex struct {
	ring []dedupeRecord
	head int // oldest
	n    int
	max  int
	seen map[uint64]int64 // key → when taken (UnixNano)
}

type dedupeRecord struct {
	key uint64
	at  int64
}

// seenOrAdd reports whether key was taken within window before at; if not,
// it records key.
func (d *dedupeIndex) seenOrAdd(key uint64, at time.Time, window time.Duration) bool {
	now := at.UnixNano()
	if t, ok := d.seen[key]; ok && now-t < int64(window) {
		return true
	}
	if d.seen == nil {
		d.seen = make(map[uint64]int64)
	}
	if d.n == d.max {
		old := d.ring[d.head]
		if d.seen[old.key] == old.at {
			delete(d.seen, old.key)
		}
		d.head = (d.head + 1) % len(d.ring)
		d.n--
	} else if d.n == len(d.ring) {
		size := min(max(2*len(d.ring), 8), d.max)
		ring := make([]dedupeRecord, size)
		for i := range d.n {
			ring[i] = d.ring[(d.head+i)%len(d.ring)]
		}
		d.ring, d.head = ring, 0
	}
	d.ring[(d.head+d.n)%len(d.ring)] = dedupeRecord{key: key, at: now}
	d.n++
	d.seen[key] = now
	return false
}

// expire forgets keys older than cutoff.
func (d *dedupeIndex) expire(cutoff time.Time) {
	c := cutoff.UnixNano()
	for d.n > 0 && d.ring[d.head].at < c {
		old := d.ring[d.head]
		if d.seen[old.key] == old.at {
			delete(d.seen, old.key)
		}
		d.head = (d.head + 1) % len(d.ring)
		d.n--
	}
	if d.n == 0 {
		d.ring, d.seen, d.head = nil, nil, 0
	}
}
