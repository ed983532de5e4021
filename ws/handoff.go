package ws

import (
	"slices"
	"time"
)

// Moving a participant between nodes (SPEC section 4, rolling restarts):
// the node that takes a participant over first Prepares it (deliveries are
// buffered, and the caller announces the new home to the cluster), then
// gets the old home to Export it (the old home forgets it, so deliveries
// that still reach it are forwarded to the new home), then Installs the
// exported state. Sequence numbers continue; buffered events that the old
// home had too are recognised by their dedupe keys and kept once.

// ParticipantState is everything a node holds for one participant, as it
// travels from its old home to its new one.
type ParticipantState struct {
	ID          string        `json:"participant_id"`
	Type        string        `json:"participant_type"`
	Sessions    []string      `json:"sessions"`
	NextSeq     uint64        `json:"next_seq"`
	LastWritten uint64        `json:"last_written"`
	Acked       uint64        `json:"acked"`
	Events      []EventState  `json:"events"`
	Dedupe      []DedupeState `json:"dedupe,omitempty"`
}

// EventState is one mailbox entry in transit.
type EventState struct {
	Seq  uint64    `json:"seq"`
	ID   string    `json:"event_id"`
	At   time.Time `json:"at"`
	Key  uint64    `json:"key,omitempty"`
	Tail []byte    `json:"tail"` // the shared frame bytes after the seq
}

// DedupeState is one remembered (sender_id, event_id) key.
type DedupeState struct {
	Key uint64 `json:"k"`
	At  int64  `json:"t"`
}

// ExportResult says why Export did or did not hand a participant over.
type ExportResult int

const (
	Exported   ExportResult = iota
	NotHere                 // no such participant on this node
	Attached                // attached here: it is not moved, it lives on both nodes
	BeingMoved              // this node is taking it over itself: ask again shortly
)

// Export removes an offline participant from this node and returns its
// state.
func (h *Hub) Export(id string) (ParticipantState, ExportResult) {
	s := h.shardOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.m[id]
	if p == nil {
		return ParticipantState{}, NotHere
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h.connMu.Lock()
	draining := h.draining
	h.connMu.Unlock()
	switch {
	case len(p.conns) > 0 && !draining: // a draining node's connections are going away
		return ParticipantState{}, Attached
	case p.pending:
		return ParticipantState{}, BeingMoved
	}
	st := ParticipantState{ID: p.id, Type: p.typ, Sessions: p.sortedSessionsLocked(), NextSeq: p.box.nextSeq,
		LastWritten: p.lastWritten, Acked: p.acked, Events: make([]EventState, 0, p.box.n)}
	for seq := p.box.oldest(); seq <= p.box.newest() && p.box.n > 0; seq++ {
		e := p.box.at(seq)
		st.Events = append(st.Events, EventState{Seq: seq, ID: e.ev.ID, At: e.ev.At, Key: e.ev.key, Tail: e.ev.tail})
	}
	for i := range p.dedupe.n {
		r := p.dedupe.ring[(p.dedupe.head+i)%len(p.dedupe.ring)]
		st.Dedupe = append(st.Dedupe, DedupeState{Key: r.key, At: r.at})
	}
	h.removeLocked(s, id, p)
	return st, Exported
}

// Abandon drops a prepared participant whose takeover found nothing to take
// (another node has it): the deliveries it buffered reached that node too.
func (h *Hub) Abandon(p *Participant) { h.dropPending(p) }

// dropPending removes prepared participant p, whose takeover ended without
// it, and returns the deliveries it buffered, no longer counted against the
// byte budget (nil when p is not pending here any more). An attach that
// waited for the takeover is refused (awaitTakeover).
func (h *Hub) dropPending(p *Participant) []*Event {
	s := h.shardOf(p.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.pending || s.m[p.id] != p {
		return nil
	}
	buffered := p.buffered
	for _, ev := range buffered {
		h.held.release(ev)
	}
	p.buffered = nil
	close(p.ready)
	h.removeLocked(s, p.id, p)
	return buffered
}

// Prepare makes participant id ready to be taken over: created if missing,
// its deliveries buffered until Install. It reports false when the
// participant is already here (nothing to take over).
func (h *Hub) Prepare(id, typ string, sessions []string) (*Participant, bool) {
	s := h.shardOf(id)
	s.mu.Lock()
	if p := s.m[id]; p != nil {
		s.mu.Unlock()
		return p, false
	}
	p := &Participant{id: id, typ: typ, box: h.newMailbox(), offlineSince: h.cfg.Now(),
		dedupe: dedupeIndex{max: h.cfg.DedupeSize}, pending: true, ready: make(chan struct{})}
	s.m[id] = p
	h.cfg.Metrics.Participants.Inc()
	p.mu.Lock()
	s.mu.Unlock()
	defer p.mu.Unlock()
	for _, session := range sessions {
		_ = h.joinLocked(p, session) // announces the new home
	}
	if len(sessions) == 0 {
		h.announceLocked(p)
	}
	return p, true
}

// Install gives a prepared participant the state exported by its old home
// (nil: none could be had; it starts afresh) and then the deliveries
// buffered meanwhile, minus those the old home had already taken.
func (h *Hub) Install(p *Participant, st *ParticipantState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.pending {
		return
	}
	if st != nil {
		// State the cluster already accepted is never refused: it may take
		// this node past its byte budget for a while.
		p.box.uncount()
		p.box = h.newMailbox()
		if len(st.Events) > 0 {
			p.box.nextSeq = st.Events[0].Seq
		}
		for _, es := range st.Events {
			ev := &Event{ID: es.ID, At: es.At, tail: es.Tail, key: es.Key}
			p.box.append(ev)
		}
		p.box.nextSeq = max(p.box.nextSeq, st.NextSeq)
		h.cfg.Metrics.MailboxEvents.Add(float64(p.box.n))
		p.lastWritten, p.acked = st.LastWritten, st.Acked
		for _, d := range st.Dedupe {
			p.dedupe.seenOrAdd(d.Key, time.Unix(0, d.At), h.cfg.DedupeWindow)
		}
		for _, session := range st.Sessions {
			_ = h.joinLocked(p, session)
		}
	}
	p.pending = false
	close(p.ready)
	buffered := p.buffered
	p.buffered = nil
	for _, ev := range buffered {
		h.deliverLocked(p, ev)
		h.held.release(ev) // the buffer's reference; the mailbox took its own
	}
	h.announceLocked(p)
}

// Settings returns the hub's configuration with its defaults filled in
// (the sidecar sizes hand-offs by the mailbox size and the offline TTL).
func (h *Hub) Settings() Config { return h.cfg }

// GiveBack drops a prepared participant whose takeover failed after the
// old home may already have let go of it, and returns the deliveries it
// buffered meanwhile, for the old home to take back with its state.
func (h *Hub) GiveBack(p *Participant) []EventState {
	buffered := h.dropPending(p)
	out := make([]EventState, 0, len(buffered))
	for _, ev := range buffered { // the old home takes them as state
		out = append(out, EventState{ID: ev.ID, At: ev.At, Key: ev.key, Tail: ev.tail})
	}
	return out
}

// Restore puts back a participant whose hand-off to another node failed:
// st is the state this node exported (nil: it never let go, the
// participant is still here), extra the deliveries the other node buffered
// meanwhile. Events already here are recognised by their dedupe keys and
// kept once. It reports false when there is nothing to restore into (st
// nil and the participant gone).
func (h *Hub) Restore(id string, st *ParticipantState, extra []EventState) bool {
	var p *Participant
	if st != nil {
		var created bool
		p, created = h.Prepare(id, st.Type, st.Sessions)
		if created {
			h.Install(p, st)
		} else { // here again meanwhile: what it held comes as new events, before what was buffered
			extra = append(slices.Clone(st.Events), extra...)
		}
	} else if p = h.Lookup(id); p == nil {
		return false
	}
	for _, es := range extra {
		h.Deliver(p, &Event{ID: es.ID, At: es.At, tail: es.Tail, key: es.Key})
	}
	return true
}
