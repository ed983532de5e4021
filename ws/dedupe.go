package ws

import "time"

// dedupeIndex remembers the (sender_id, event_id) keys of the events a
// participant's mailbox took recently, so that a retried submit, on any
// node, is not delivered twice: the check lives on the recipient's home
// node, which every retry of an event for it reaches. It keeps at most max
// keys (oldest dropped first) and honours them for window. It grows on
// demand; an idle participant costs nothing.
//
// The keys live in a ring; the map that finds them is built on the first
// lookup and kept up to date from then on. Events whose ids this node has
// just assigned need no lookup (nobody can have sent them before), so a
// participant that only receives those pays a ring slot per event and no
// map insert — a large share of a fan-out's cost otherwise.
type dedupeIndex struct {
	ring  []dedupeRecord
	head  int // oldest
	n     int
	max   int
	index map[uint64]int64 // key → when taken (UnixNano); nil until a lookup
}

type dedupeRecord struct {
	key uint64
	at  int64
}

// seenOrAdd reports whether key was taken within window before at; if not,
// it records key.
func (d *dedupeIndex) seenOrAdd(key uint64, at time.Time, window time.Duration) bool {
	if d.seen(key, at, window) {
		return true
	}
	d.add(key, at)
	return false
}

// seen reports whether key was taken within window before at.
func (d *dedupeIndex) seen(key uint64, at time.Time, window time.Duration) bool {
	if d.n == 0 {
		return false
	}
	if d.index == nil {
		d.index = make(map[uint64]int64, d.n)
		for i := range d.n {
			r := d.ring[(d.head+i)%len(d.ring)]
			d.index[r.key] = r.at // a later record of a key wins, as in add
		}
	}
	t, ok := d.index[key]
	return ok && at.UnixNano()-t < int64(window)
}

// add records key as taken at at, without looking it up.
func (d *dedupeIndex) add(key uint64, at time.Time) {
	now := at.UnixNano()
	if d.n == d.max {
		d.dropOldest()
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
	if d.index != nil {
		d.index[key] = now
	}
}

func (d *dedupeIndex) dropOldest() {
	old := d.ring[d.head]
	if d.index != nil && d.index[old.key] == old.at {
		delete(d.index, old.key)
	}
	d.head = (d.head + 1) % len(d.ring)
	d.n--
}

// expire forgets keys older than cutoff.
func (d *dedupeIndex) expire(cutoff time.Time) {
	c := cutoff.UnixNano()
	for d.n > 0 && d.ring[d.head].at < c {
		d.dropOldest()
	}
	if d.n == 0 {
		d.ring, d.index, d.head = nil, nil, 0
	}
}
