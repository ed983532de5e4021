package ws

import (
	"context"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Lock order (take them in this order, never the reverse):
//
//	shard.mu → Participant.mu → Hub.sessMu → Hub.connMu
//
// None of these is held across socket I/O: writers copy what they need
// from the mailbox under Participant.mu and write after releasing it. The
// one lock held across a socket write is a connection's guardedConn.mu
// (wire.go), a leaf lock that orders the data writer with coder/websocket's
// control frames and is never taken with any other held; a pong or close
// frame waits behind a data write in progress.

const shardCount = 64

// Hub holds this node's participants: their mailboxes, sessions and open
// connections. Delivering to a participant appends to its mailbox and wakes
// its connections' writers; it never blocks on a socket.
type Hub struct {
	cfg  Config
	log  *slog.Logger
	seed maphash.Seed
	// held is the node's count of mailbox bytes (kept in Metrics, whose
	// gauge reads it); MaxMailboxBytes bounds it for new events.
	held *byteCount

	shards [shardCount]shard

	sessMu sync.RWMutex
	// sessions maps a session id to its local members. Each slice is
	// replaced, never mutated, so readers may keep one without a lock.
	sessions map[string][]*Participant

	connMu    sync.Mutex
	conns     map[*conn]struct{} // started connections
	upgrading int                // attaches between admission and start
	draining  bool
	connWG    sync.WaitGroup

	// Connections (started or upgrading) per participant and per
	// credential key, for the per-participant and per-credential caps;
	// guarded by connMu. Attaches grow them; an entry is deleted when its
	// count reaches zero, so each holds at most one key per connection slot
	// (at most maxConns keys).
	participantConns map[string]int
	credentialConns  map[string]int

	stopSweep chan struct{}
	sweepDone chan struct{}
	stopOnce  sync.Once

	spreadDone chan struct{} // closed when Drain has asked every connection to close
	stopSpread chan struct{} // cuts the spread short
	spreadStop sync.Once
}

type shard struct {
	mu sync.Mutex
	m  map[string]*Participant
}

// Participant is one participant homed on this node.
type Participant struct {
	id string

	mu           sync.Mutex
	typ          string
	sessions     map[string]struct{} // a set: a join or leave costs the same however many there are
	box          mailbox
	dedupe       dedupeIndex
	conns        []*conn
	lastWritten  uint64 // newest seq written to any connection
	acked        uint64 // newest seq the client acknowledged
	offlineSince time.Time
	gone         bool // removed from the hub; holders of a stale pointer must drop it
	// pending: being taken over from another node; deliveries wait in
	// buffered until Install (bounded by MailboxSize).
	pending  bool
	buffered []*Event
	ready    chan struct{} // closed when a takeover ends (Install or Abandon)
}

// awaitTakeover waits until a takeover of p in progress has ended, or ctx
// ends: a connection must not start on a mailbox that is about to be
// replaced. It reports false when the takeover it waited for ended without
// p (given back or abandoned: p lives on another node), where a connection
// must not start a fresh, empty p either.
func (p *Participant) awaitTakeover(ctx context.Context) bool {
	p.mu.Lock()
	ready, pending := p.ready, p.pending
	p.mu.Unlock()
	if !pending {
		return true
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return true // the client left: its upgrade fails on its own
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.gone
}

// ID is the participant id.
func (p *Participant) ID() string { return p.id }

// Listener hears of changes to this node's participants, in order per
// participant. It is called with the participant's lock held, so it must be
// quick and must not call back into the Hub. Joins and leaves come one
// session at a time, so that what a change costs the listener does not
// grow with the participant's other sessions.
type Listener interface {
	// LocalParticipant: p is new here, or its type or online state
	// changed. p.Sessions is not set.
	LocalParticipant(p ParticipantInfo)
	// LocalSessionJoined: participant id (of type typ) joined session.
	LocalSessionJoined(id, typ, session string)
	// LocalSessionLeft: participant id left session.
	LocalSessionLeft(id, session string)
	// LocalParticipantGone: participant id is no longer here.
	LocalParticipantGone(id string)
}

// ParticipantInfo is a snapshot of one local participant.
type ParticipantInfo struct {
	ID       string
	Type     string
	Sessions []string
	Online   bool
}

// NewHub makes a hub and starts its sweeper; Shutdown stops it.
func NewHub(cfg Config) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{
		cfg:        cfg,
		log:        cfg.Logger,
		seed:       maphash.MakeSeed(),
		sessions:   make(map[string][]*Participant),
		conns:      make(map[*conn]struct{}),
		stopSweep:  make(chan struct{}),
		sweepDone:  make(chan struct{}),
		spreadDone: make(chan struct{}),
		stopSpread: make(chan struct{}),
	}
	for i := range h.shards {
		h.shards[i].m = make(map[string]*Participant)
	}
	h.participantConns, h.credentialConns = make(map[string]int), make(map[string]int)
	h.held = &cfg.Metrics.mailboxBytes
	cfg.Metrics.MailboxBytesLimit.Set(float64(cfg.MaxMailboxBytes))
	go h.sweepLoop()
	return h
}

func (h *Hub) shardOf(id string) *shard {
	return &h.shards[maphash.String(h.seed, id)%shardCount]
}

// Lookup returns the local participant id, or nil.
func (h *Hub) Lookup(id string) *Participant {
	s := h.shardOf(id)
	s.mu.Lock()
	p := s.m[id]
	s.mu.Unlock()
	return p
}

// SessionMembers returns the local members of a session. The slice is shared:
// the caller must not modify it.
func (h *Hub) SessionMembers(session string) []*Participant {
	h.sessMu.RLock()
	m := h.sessions[session]
	h.sessMu.RUnlock()
	return m
}

// IDs lists the local participants.
func (h *Hub) IDs() []string {
	var ids []string
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for id := range s.m {
			ids = append(ids, id)
		}
		s.mu.Unlock()
	}
	return ids
}

// Count returns the number of local participants, online or not.
func (h *Hub) Count() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// InSession reports whether p is a member of session.
func (p *Participant) InSession(session string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.sessions[session]
	return ok
}

// Info returns a snapshot of p.
func (p *Participant) Info() ParticipantInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.infoLocked()
}

func (p *Participant) infoLocked() ParticipantInfo {
	return ParticipantInfo{ID: p.id, Type: p.typ, Sessions: p.sortedSessionsLocked(), Online: len(p.conns) > 0}
}

// sortedSessionsLocked lists p's sessions in order (never nil).
func (p *Participant) sortedSessionsLocked() []string {
	return append(make([]string, 0, len(p.sessions)), slices.Sorted(maps.Keys(p.sessions))...)
}

// Delivery is what happened to one event for one participant.
type Delivery int

const (
	// Gone: the participant was removed meanwhile (a stale pointer).
	Gone Delivery = iota
	// Live: appended, and the participant has an open connection here.
	Live
	// Queued: appended for an offline participant, within its offline window.
	Queued
	// Duplicate: the mailbox already took this (sender_id, event_id) within
	// the dedupe window; nothing was appended.
	Duplicate
)

// Accepted reports whether the participant has the event (now or before).
func (d Delivery) Accepted() bool { return d != Gone }

// Deliver appends ev to p's mailbox and wakes p's connections.
func (h *Hub) Deliver(p *Participant, ev *Event) Delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return Gone
	}
	if p.pending {
		// The buffer is bounded like the mailbox it will be replayed into,
		// and full it drops its oldest event as the mailbox would (a gap
		// frame tells a connection): never the newest, which was accepted.
		if len(p.buffered) == h.cfg.MailboxSize {
			h.held.release(p.buffered[0])
			p.buffered[0] = nil
			p.buffered = p.buffered[1:]
		}
		h.held.hold(ev) // released when Install or Abandon ends the buffer
		p.buffered = append(p.buffered, ev)
		return Queued
	}
	return h.deliverLocked(p, ev)
}

func (h *Hub) deliverLocked(p *Participant, ev *Event) Delivery {
	if ev.key != 0 {
		if !ev.freshID && p.dedupe.seen(ev.key, ev.At, h.cfg.DedupeWindow) {
			return Duplicate
		}
		p.dedupe.add(ev.key, ev.At)
	}
	expired := p.box.expire(ev.At.Add(-h.cfg.MailboxTTL))
	_, evicted := p.box.append(ev)
	h.cfg.Metrics.MailboxEvents.Add(float64(1 - evicted - expired))
	for _, c := range p.conns {
		c.notifyLocked()
	}
	if len(p.conns) == 0 {
		return Queued
	}
	return Live
}

// Join adds participant id (created offline when unknown here) to session.
func (h *Hub) Join(id, typ, session string) error {
	for {
		p, _ := h.getOrCreate(id, typ)
		p.mu.Lock()
		if p.gone { // the sweeper removed it between lookup and lock
			p.mu.Unlock()
			continue
		}
		if len(p.conns) == 0 {
			p.offlineSince = h.cfg.Now() // an offline participant's window restarts
		}
		err := h.joinLocked(p, session)
		p.mu.Unlock()
		return err
	}
}

func (h *Hub) joinLocked(p *Participant, session string) error {
	if _, in := p.sessions[session]; in {
		return nil
	}
	if len(p.sessions) >= h.cfg.MaxSessionsPerParticipant {
		return ErrTooManySessions
	}
	if p.sessions == nil {
		p.sessions = map[string]struct{}{}
	}
	p.sessions[session] = struct{}{}
	h.sessMu.Lock()
	members := h.sessions[session]
	next := make([]*Participant, len(members), len(members)+1)
	copy(next, members)
	h.sessions[session] = append(next, p)
	h.sessMu.Unlock()
	if h.cfg.Listener != nil {
		h.cfg.Listener.LocalSessionJoined(p.id, p.typ, session)
	}
	return nil
}

// Leave removes participant id from session. It reports whether it was a member.
func (h *Hub) Leave(id, session string) bool {
	p := h.Lookup(id)
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return false
	}
	if _, in := p.sessions[session]; !in {
		return false
	}
	delete(p.sessions, session)
	h.dropFromSession(p, session)
	if h.cfg.Listener != nil {
		h.cfg.Listener.LocalSessionLeft(p.id, session)
	}
	return true
}

func (h *Hub) dropFromSession(p *Participant, session string) {
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	members := h.sessions[session]
	i := slices.Index(members, p)
	if i < 0 {
		return
	}
	if len(members) == 1 {
		delete(h.sessions, session)
		return
	}
	next := make([]*Participant, 0, len(members)-1)
	next = append(next, members[:i]...)
	h.sessions[session] = append(next, members[i+1:]...)
}

// announceLocked tells the listener p's type and online state.
func (h *Hub) announceLocked(p *Participant) {
	if h.cfg.Listener != nil {
		h.cfg.Listener.LocalParticipant(ParticipantInfo{ID: p.id, Type: p.typ, Online: len(p.conns) > 0})
	}
}

// getOrCreate returns the participant id, creating it offline if needed.
func (h *Hub) getOrCreate(id, typ string) (*Participant, bool) {
	s := h.shardOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.m[id]; p != nil {
		return p, false
	}
	p := &Participant{id: id, typ: typ, box: h.newMailbox(), offlineSince: h.cfg.Now(),
		dedupe: dedupeIndex{max: h.cfg.DedupeSize}}
	s.m[id] = p
	h.cfg.Metrics.Participants.Inc()
	return p, true
}

// newMailbox is an empty mailbox counted against the node's byte budget.
func (h *Hub) newMailbox() mailbox {
	m := newMailbox(h.cfg.MailboxSize)
	m.held = h.held
	return m
}

// Ack records a cumulative acknowledgement from p's client and frees the
// mailbox entries that every open connection has been sent.
func (h *Hub) ack(p *Participant, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq > p.box.newest() {
		seq = p.box.newest()
	}
	if seq <= p.acked {
		return
	}
	p.acked = seq
	through := seq
	for _, c := range p.conns {
		through = min(through, c.next-1)
	}
	h.cfg.Metrics.MailboxEvents.Sub(float64(p.box.trimThrough(through)))
}

func (h *Hub) sweepLoop() {
	defer close(h.sweepDone)
	t := time.NewTicker(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stopSweep:
			return
		case <-t.C:
			now := h.cfg.Now()
			h.sweep(now)
			h.cutStuckWrites(now)
			h.keepConnectionsAlive()
		}
	}
}

// sweep expires old mailbox entries and removes participants that have been
// offline longer than OfflineTTL.
func (h *Hub) sweep(now time.Time) {
	mailboxCutoff := now.Add(-h.cfg.MailboxTTL)
	offlineCutoff := now.Add(-h.cfg.OfflineTTL)
	dedupeCutoff := now.Add(-h.cfg.DedupeWindow)
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for id, p := range s.m {
			p.mu.Lock()
			h.cfg.Metrics.MailboxEvents.Sub(float64(p.box.expire(mailboxCutoff)))
			p.dedupe.expire(dedupeCutoff)
			if len(p.conns) == 0 && !p.pending && p.offlineSince.Before(offlineCutoff) {
				h.removeLocked(s, id, p)
			}
			p.mu.Unlock()
		}
		s.mu.Unlock()
	}
}

// cutStuckWrites drops connections whose current write has taken longer
// than WriteTimeout: their client stopped reading and the socket is full.
func (h *Hub) cutStuckWrites(now time.Time) {
	cutoff := now.Add(-h.cfg.WriteTimeout).UnixNano()
	var stuck []*conn
	h.connMu.Lock()
	for c := range h.conns {
		if since := c.writingSince.Load(); since != 0 && since < cutoff {
			stuck = append(stuck, c)
		}
	}
	h.connMu.Unlock()
	for _, c := range stuck {
		h.log.Debug("write deadline passed, dropping connection", "participant", c.p.id)
		_ = c.ws.CloseNow()
	}
}

// removeLocked forgets p; the caller holds s.mu and p.mu.
func (h *Hub) removeLocked(s *shard, id string, p *Participant) {
	delete(s.m, id)
	p.gone = true
	for session := range p.sessions {
		h.dropFromSession(p, session)
	}
	h.cfg.Metrics.MailboxEvents.Sub(float64(p.box.n))
	p.box.uncount()
	h.cfg.Metrics.Participants.Dec()
	if h.cfg.Listener != nil {
		h.cfg.Listener.LocalParticipantGone(id)
	}
}

// Drain starts a shutdown: new attaches are refused and every connection
// is asked to close with 1001 (going away) once it has written what is
// queued for it. With DrainSpread set, the requests are spread over that
// time, so that clients do not all reconnect at once. Participants stay
// (offline) and may be exported while the connections close. It returns at
// once; Shutdown waits. Safe to call more than once.
func (h *Hub) Drain() {
	h.connMu.Lock()
	if h.draining {
		h.connMu.Unlock()
		return
	}
	h.draining = true
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.connMu.Unlock()
	if h.cfg.DrainSpread <= 0 || len(conns) < 2 {
		for _, c := range conns {
			c.requestClose(closeGoingAway)
		}
		close(h.spreadDone)
		return
	}
	go func() { // owned by the hub: Shutdown waits for it
		defer close(h.spreadDone)
		const steps = 20
		tick := time.NewTicker(h.cfg.DrainSpread / steps)
		defer tick.Stop()
		per := (len(conns) + steps - 1) / steps
		for i := 0; i < len(conns); i += per {
			for _, c := range conns[i:min(i+per, len(conns))] {
				c.requestClose(closeGoingAway)
			}
			select {
			case <-tick.C:
			case <-h.stopSpread:
				for _, c := range conns[min(i+per, len(conns)):] {
					c.requestClose(closeGoingAway)
				}
				return
			}
		}
	}()
}

// Shutdown drains (see Drain) and waits for the connections until ctx
// ends; those left then are cut. It stops the sweeper. Safe to call more
// than once.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.Drain()
	// The sweeper runs until the connections are gone: it is what cuts a
	// write stuck on a client that stopped reading (--write-timeout).
	defer func() {
		h.stopOnce.Do(func() { close(h.stopSweep) })
		<-h.sweepDone
	}()

	done := make(chan struct{})
	go func() { h.connWG.Wait(); close(done) }()
	select {
	case <-done:
		<-h.spreadDone
		return nil
	case <-ctx.Done():
		h.spreadStop.Do(func() { close(h.stopSpread) })
		<-h.spreadDone
		h.connMu.Lock()
		for c := range h.conns {
			_ = c.ws.CloseNow()
		}
		h.connMu.Unlock()
		<-done
		return ctx.Err()
	}
}
