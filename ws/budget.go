package ws

import (
	"sync/atomic"
	"unsafe"
)

// The mailbox byte budget (Config.MaxMailboxBytes): what a node's mailboxes
// hold is counted in one node-wide total, so that a node refuses new events
// before offline or slow participants exhaust its memory.
//
// An Event's bytes are shared by every mailbox on the node that holds it,
// so they are counted once: the Event carries a reference count, the first
// holder adds its cost to the total and the last one to let go takes it
// away. Holders are mailbox entries, a takeover's buffered deliveries and a
// submit's reservation (Reserve). Each mailbox's ring of slots is counted
// too, as it grows and is given back. The total is touched once per event,
// not once per recipient.

// eventOverhead approximates what an Event costs besides its frame bytes:
// the struct and its event_id.
const eventOverhead = int64(unsafe.Sizeof(Event{})) + 48

// slotBytes is the size of one mailbox slot.
const slotBytes = int64(unsafe.Sizeof(entry{}))

// byteCount is a node's count of the bytes its mailboxes hold. A nil
// *byteCount counts nothing (a mailbox tested on its own).
type byteCount struct{ n atomic.Int64 }

func (b *byteCount) add(delta int64) {
	if b != nil {
		b.n.Add(delta)
	}
}

func (b *byteCount) load() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// cost is what holding e costs the node.
func (e *Event) cost() int64 { return int64(cap(e.tail)) + eventOverhead }

// hold takes a reference to ev for b; the first one counts its bytes.
func (b *byteCount) hold(ev *Event) {
	if b != nil && ev.refs.Add(1) == 1 {
		b.n.Add(ev.cost())
	}
}

// release drops a reference taken by hold or Reserve; the last one
// uncounts its bytes.
func (b *byteCount) release(ev *Event) {
	if b != nil && ev.refs.Add(-1) == 0 {
		b.n.Add(-ev.cost())
	}
}

// reserve counts ev's bytes and takes a reference to it, unless that would
// take the total past limit. A reservation is what keeps concurrent submits
// from overshooting the budget together.
func (b *byteCount) reserve(ev *Event, limit int64) bool {
	cost := ev.cost()
	for {
		held := b.n.Load()
		if held+cost > limit {
			return false
		}
		if b.n.CompareAndSwap(held, held+cost) {
			break
		}
	}
	if ev.refs.Add(1) != 1 { // already held here: it was counted then
		b.n.Add(-cost)
	}
	return true
}

// Reserve admits a new event to this node's mailboxes: it reports false,
// and counts a refusal, when holding ev would take the bytes held past
// MaxMailboxBytes. Otherwise ev is counted from now on, and the caller
// delivers it and then calls Release. Events that arrive without a
// reservation (a takeover's installed state) are counted but never refused.
func (h *Hub) Reserve(ev *Event) bool {
	if h.held.reserve(ev, h.cfg.MaxMailboxBytes) {
		return true
	}
	h.cfg.Metrics.BudgetRefusals.Inc()
	return false
}

// Release ends a reservation made by Reserve; the event stays counted while
// a mailbox holds it.
func (h *Hub) Release(ev *Event) { h.held.release(ev) }

// MailboxBytes is what this node's mailboxes hold now, in bytes: the events
// (each counted once however many mailboxes share it) and their slots.
func (h *Hub) MailboxBytes() int64 { return h.held.load() }
