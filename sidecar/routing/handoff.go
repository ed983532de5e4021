package routing

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// Moving participants between nodes, so that no event is lost when a node
// drains or a participant reconnects elsewhere (SPEC section 4):
//
//   - A node that gets an attach for a participant whose home is another
//     node, where it is offline, takes it over before the welcome: it
//     prepares the participant (buffering deliveries) and announces the new
//     home to every peer, asks the old home to release it (POST
//     /v1/gateway/cluster/release answers the mailbox, seq counter and
//     dedupe keys; the old home takes it out of its hub, forwarding what
//     still reaches it, but holds the state until the new home confirms),
//     then installs that state and the buffered deliveries, and confirms.
//     A transfer that fails is asked for again (the same held state), then
//     given back (POST /v1/gateway/cluster/restore, with the deliveries
//     buffered meanwhile): never started afresh over a mailbox that exists.
//   - A draining node, after closing its WebSockets with 1001, asks a
//     successor to take over each participant still here (POST
//     /v1/gateway/cluster/takeover), so that events for a participant
//     between homes are kept, not refused; the participant may reconnect
//     anywhere and is taken over again from the successor.

// handoffWorkers bounds the takeovers a draining node runs at once.
const handoffWorkers = 16

// MaxStateBytes is the largest JSON encoding of a participant's state
// (ws.ParticipantState) that a node with these settings can hold: every
// slot of the mailbox (mailboxSize; 0 takes ws's default, 1024) with the
// largest event, and as many dedupe keys. An event's frame is its body
// re-encoded, where json.Marshal may write 6 bytes for 1 (\u003c for <),
// plus its envelope (ids, traceparent: under 2 KiB); it travels as base64
// (4/3), with its seq, id, time and key (under 512 bytes).
//
// With a mailbox byte budget (mailboxBytes > 0) a mailbox's frames hold at
// most that many bytes however many events they are, which bounds the
// state far lower (about 342 MiB for the default 256 MiB budget): the
// smaller of the two bounds is taken. Nodes of one cluster share their
// settings, so no state a peer's mailbox accepted is refused.
func MaxStateBytes(maxBodyBytes int64, mailboxSize int, mailboxBytes int64) int64 {
	if mailboxSize <= 0 {
		mailboxSize = 1024
	}
	const perEventEnvelope, perDedupeKey = 512, 64
	perEvent := (6*maxBodyBytes+2<<10)*4/3 + perEventEnvelope
	bound := int64(mailboxSize)*(perEvent+perDedupeKey) + 64<<10
	if mailboxBytes > 0 {
		budgeted := mailboxBytes*4/3 + int64(mailboxSize)*(perEventEnvelope+perDedupeKey) + 64<<10
		bound = min(bound, budgeted)
	}
	return bound
}

// movedTo remembers, for a while, where this node released participants
// to, so that deliveries reaching it from peers whose directory lags are
// forwarded to the new home instead of refused.
type movedTo struct {
	mu      sync.Mutex
	entries map[string]movedEntry
}

type movedEntry struct {
	node  string
	until time.Time
}

// movedMemory is how long a release is remembered: far longer than the
// directory takes to converge.
const movedMemory = time.Minute

// note remembers that id went to node, and returns what it remembered of
// id before (zero: nothing) and what it wrote, for putBack.
func (m *movedTo) note(id, node string, now time.Time) (prev, wrote movedEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev = m.entries[id]
	if m.entries == nil {
		m.entries = map[string]movedEntry{}
	}
	if len(m.entries) >= 1024 { // keep it small: drop what expired
		for k, e := range m.entries {
			if now.After(e.until) {
				delete(m.entries, k)
			}
		}
	}
	wrote = movedEntry{node: node, until: now.Add(movedMemory)}
	m.entries[id] = wrote
	return prev, wrote
}

// putBack undoes a note that did not happen after all (prev and wrote are
// what note returned), unless another note replaced it meanwhile: a
// give-back's, which is newer.
func (m *movedTo) putBack(id string, prev, wrote movedEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[id] != wrote {
		return
	}
	if prev.node == "" {
		delete(m.entries, id)
		return
	}
	m.entries[id] = prev
}

// forget drops what note remembered of id: it is back here.
func (m *movedTo) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
}

func (m *movedTo) lookup(id string, now time.Time) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; ok && now.Before(e.until) {
		return e.node
	}
	return ""
}

type ParticipantRef struct {
	ParticipantID string `json:"participant_id"`
	From          string `json:"from,omitempty"`
	// Confirm, in a release: the state arrived and is installed at From;
	// the old home drops the copy it held.
	Confirm bool `json:"confirm,omitempty"`
}

// RestoreRequest gives a participant back to its old home after a failed
// transfer, with the deliveries the would-be new home buffered meanwhile.
type RestoreRequest struct {
	ParticipantRef
	Events []ws.EventState `json:"events"`
}

// heldStates keeps, on an old home, the state of each participant it
// released until the new home confirms it has it, so that a transfer cut
// midway can be asked for again (the same answer) or given back (restored
// here). A release adds an entry, which replaces the participant it
// exported in memory; a confirm, a restore, this node taking the
// participant over again, a timer after --offline-ttl (when the
// participant, offline here, would have been dropped anyway) or the node
// stopping removes it.
// A timer is no goroutine until it fires, and then a short one, which the
// node's tasks own (timers): Shutdown waits for an expiry in progress.
type heldStates struct {
	timers  *tasks.Group
	mu      sync.Mutex
	entries map[string]heldState

	// releasing makes a release's export and hold one step per
	// participant (Gateway.releaseHere), which a restore waits for. Lock
	// order: releasing, then movedTo's and the hub's locks, then mu, then
	// the timers' group.
	releasing keyedMutex
	// exported, when set (tests), is called between a release's export
	// and its hold.
	exported atomic.Pointer[func(id string)]
}

type heldState struct {
	st     *ws.ParticipantState
	to     string      // the node it was released to
	expiry *time.Timer // nil when the node was stopping: it drops st itself
}

// hold keeps st, released to node to, for ttl.
func (h *heldStates) hold(st *ws.ParticipantState, to string, ttl time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.entries == nil {
		h.entries = map[string]heldState{}
	}
	h.removeLocked(st.ID)
	// Refused (nil) once the node is stopping: its Shutdown clears every
	// state held, timer or not.
	expiry, _ := h.timers.AfterFunc(ttl, func(context.Context) { h.expire(st) })
	h.entries[st.ID] = heldState{st: st, to: to, expiry: expiry}
}

// expire drops st unless another state of its participant replaced it.
func (h *heldStates) expire(st *ws.ParticipantState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.entries[st.ID]; ok && e.st == st {
		delete(h.entries, st.ID)
	}
}

// get returns the state of id held for node to, or nil.
func (h *heldStates) get(id, to string) *ws.ParticipantState {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.entries[id]; ok && e.to == to {
		return e.st
	}
	return nil
}

// take returns the state of id held for node to, or nil, and forgets it.
func (h *heldStates) take(id, to string) *ws.ParticipantState {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[id]
	if !ok || e.to != to {
		return nil
	}
	h.removeLocked(id)
	return e.st
}

func (h *heldStates) removeLocked(id string) {
	if e, ok := h.entries[id]; ok {
		if e.expiry != nil {
			e.expiry.Stop()
		}
		delete(h.entries, id)
	}
}

// drop forgets whatever state of id is held.
func (h *heldStates) drop(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(id)
}

// clear forgets every state held and stops their timers: the node stopped
// and serves no release, restore or confirm any more.
func (h *heldStates) clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.entries {
		h.removeLocked(id)
	}
}

// count is the number of states held.
func (h *heldStates) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// OtherHomes lists the peers where participant id lives (the candidates
// for a takeover), its sessions as those homes have them, and its type.
// A home where it is attached answers the release with 409 and keeps it:
// the directory's online flag may lag behind a reconnect, the home may not.
func (g *Gateway) OtherHomes(ctx context.Context, id string) (nodes []string, sessions []string, typ string) {
	// Owners that do not answer leave what the others found: an attach
	// goes on with that, as it would with a stale view, rather than fail
	// while an owner's death is not yet noticed.
	entries, _ := g.cluster.Participant(ctx, id)
	for _, e := range entries {
		if e.GatewayURL != "" || e.Node == g.self {
			continue
		}
		nodes = append(nodes, e.Node)
		typ = e.Type
		if ss, err := g.cluster.HomeSessions(ctx, e.Node, id); err == nil {
			sessions = append(sessions, ss...)
		}
	}
	return nodes, sessions, typ
}

// ErrMoving answers an attach whose participant is being moved between
// other nodes right now; the client retries (the Go client does) and finds
// it settled.
var ErrMoving = wire.NewError(http.StatusServiceUnavailable, "participant_moving", "",
	"the participant is moving between nodes; attach again in a moment")

// Takeover moves participant id here from the nodes in from (tried in
// order). It is a no-op when the participant is already here. forAttach
// says a client is waiting to attach: when another node won a race for the
// participant, it follows it there (a few rounds) rather than give up, and
// fails with ErrMoving rather than start the participant afresh.
//
// A release whose answer does not arrive whole (cut, undecodable, too
// long) is asked for again: the old home answers the state it holds. If it
// still fails, the participant is given back to the old home with what was
// buffered here (ErrMoving): it never starts afresh over a mailbox that
// exists.
func (g *Gateway) Takeover(ctx context.Context, id, typ string, sessions []string, from []string, forAttach bool) error {
	p, created := g.hub.Prepare(id, typ, sessions)
	if !created {
		return nil
	}
	g.log.Debug("taking a participant over", "participant", id, "from", from, "sessions", sessions, "for_attach", forAttach)
	// The release's retries end early enough to leave time for a give-back.
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout*3/4)
	defer cancel()
	// Every peer should route to this node too before the old home lets go;
	// a few tries of Sync (1 s each) cover a slow peer. Past that, the old
	// home still forwards what reaches it (movedTo).
	for try := 0; try < 3 && ctx.Err() == nil && !g.cluster.Sync(ctx); try++ {
	}
	attachedElsewhere := false
	rounds := 1
	if forAttach {
		rounds = 3
	}
	for round := 0; round < rounds && ctx.Err() == nil; round++ {
		if round > 0 {
			from, _ = g.homesElsewhere(ctx, id) // where the winner of a race has it now
		}
		for _, node := range from {
			// A home found since the caller looked up the sessions, or a
			// caller that found none (its lookup may have failed).
			if round > 0 || len(sessions) == 0 {
				g.joinHomeSessions(ctx, p, typ, node)
			}
			st, status, err := g.Release(ctx, node, id)
			g.log.Debug("a release was answered", "participant", id, "from", node, "round", round,
				"state", st != nil, "status", status, "err", err)
			attachedElsewhere = attachedElsewhere || status == http.StatusConflict
			switch {
			case st != nil:
				g.hub.Install(p, st)
				g.held.drop(id)    // a copy held from an earlier release here is stale now
				g.moved.forget(id) // it lives here: where it went from here before is stale too
				g.confirmRelease(ctx, node, id)
				g.metrics.Handoffs.WithLabelValues("taken").Inc()
				return nil
			case err != nil: // node may have let go of it without this node getting it
				return g.giveBack(ctx, p, node, typ, sessions, err)
			}
		}
		if homes, err := g.homesElsewhere(ctx, id); attachedElsewhere || err == nil && len(homes) == 0 {
			break
		}
	}
	homes, err := g.homesElsewhere(ctx, id)
	switch {
	case attachedElsewhere: // it lives on both nodes, each with its own seq
		g.hub.Install(p, nil)
		return nil
	case err != nil || len(homes) > 0:
		// Another node has it (a successor and a reconnect raced): every
		// delivery buffered here reached it too. (Or the directory cannot
		// say: never start afresh over a mailbox that may exist.)
		g.hub.Abandon(p)
		g.log.Debug("a takeover found the participant on another node; abandoned", "participant", id, "homes", homes, "err", err)
		g.metrics.Handoffs.WithLabelValues("abandoned").Inc()
		if forAttach {
			return ErrMoving
		}
		return nil
	}
	g.log.Warn("taking a participant over failed; it starts afresh here", "participant", id, "from", from)
	g.metrics.Handoffs.WithLabelValues("failed").Inc()
	g.hub.Install(p, nil)
	return nil
}

// joinHomeSessions joins prepared participant p to the sessions node has
// it in, and waits for the directory's owners to have them, before node is
// asked to release it. From the moment node lets go, the directory must
// route those sessions here: otherwise an event submitted meanwhile finds
// no member (node no longer has it, this node is not listed yet) and is
// answered 200 without reaching the participant. Sessions node adds after
// this lookup are routed here only once the state is installed: an event
// submitted to one of them in between is answered without the participant
// (a window as wide as a release, when a join races with a move).
func (g *Gateway) joinHomeSessions(ctx context.Context, p *ws.Participant, typ, node string) {
	sessions, err := g.cluster.HomeSessions(ctx, node, p.ID())
	if err != nil {
		return // the release finds out whether node can be reached
	}
	joined := false
	for _, s := range sessions {
		if !p.InSession(s) && g.hub.Join(p.ID(), typ, s) == nil {
			joined = true
		}
	}
	if joined {
		g.cluster.Sync(ctx)
	}
}

// Release asks node to hand participant id over. It returns the state; or
// nil and the status node answered (404 not there, 409 attached there);
// or nil and an error when no whole answer came (node unreachable, or the
// answer cut, undecodable or too long): node may have let go of it then.
func (g *Gateway) Release(ctx context.Context, node, id string) (*ws.ParticipantState, int, error) {
	ans, err := g.peers.Release(ctx, node, ParticipantRef{ParticipantID: id, From: g.self})
	if errors.Is(err, ErrNotMember) {
		return nil, 0, nil // not a member: it holds nothing
	}
	return ans.State, ans.Status, err
}

// confirmRelease tells node that the participant's state is installed here,
// so that it drops the copy it held. Without it the copy expires.
func (g *Gateway) confirmRelease(ctx context.Context, node, id string) {
	ctx, cancel := g.afterRelease(ctx)
	defer cancel()
	err := g.peers.Confirm(ctx, node, ParticipantRef{ParticipantID: id, From: g.self})
	if err != nil && !errors.Is(err, ErrNotMember) {
		g.log.Info("confirming a release failed; the old home's copy expires", "participant", id, "from", node, "err", err)
	}
}

// giveBack ends a takeover whose transfer failed: node gets the
// participant back, with the deliveries buffered here, and the attaching
// client is told to try again (ErrMoving). When node cannot take it back
// either, the participant starts afresh here with what was buffered, and
// node's copy waits there until it expires.
func (g *Gateway) giveBack(ctx context.Context, p *ws.Participant, node, typ string, sessions []string, cause error) error {
	id := p.ID()
	ctx, cancel := g.afterRelease(ctx)
	defer cancel()
	// From now on, what reaches this node for id goes to node.
	g.moved.note(id, node, g.now())
	buffered := g.hub.GiveBack(p)
	status, err := g.peers.Restore(ctx, node, RestoreRequest{ParticipantRef: ParticipantRef{ParticipantID: id, From: g.self}, Events: buffered})
	if err == nil && status == http.StatusOK {
		g.log.Warn("taking a participant over failed; it stays on its old home", "participant", id, "from", node, "err", cause)
		g.metrics.Handoffs.WithLabelValues("returned").Inc()
		return ErrMoving
	}
	g.moved.forget(id)
	g.log.Warn("taking a participant over failed and its old home cannot take it back; it starts afresh here",
		"participant", id, "from", node, "err", cause, "restore_status", status, "restore_err", err)
	g.metrics.Handoffs.WithLabelValues("failed").Inc()
	g.hub.Restore(id, &ws.ParticipantState{ID: id, Type: typ, Sessions: sessions}, buffered)
	return nil
}

// afterRelease is the context of what follows a release (confirm, give
// back): not cut short by an attaching client that leaves, nor by the
// release's own deadline, and bounded by half the forward timeout.
func (g *Gateway) afterRelease(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), g.forwardTimeout/2)
}

// HandOff asks successors to take over every participant still here; a
// draining node calls it after closing its connections.
func (g *Gateway) HandOff(ctx context.Context) {
	ids := g.hub.IDs()
	peers := g.peerNames()
	if len(ids) == 0 || len(peers) == 0 {
		return
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(handoffWorkers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				for _, node := range successors(id, peers) { // the next one if a successor refuses
					if g.askTakeover(ctx, node, id) {
						break
					}
				}
			}
		}()
	}
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

func (g *Gateway) askTakeover(ctx context.Context, node, id string) bool {
	// One request, bounded: a successor that is dead, or draining too
	// (503), leaves time for the next within the drain. The successor's
	// takeover takes at most 3/4 of the forward timeout, and a give-back
	// after a failed transfer half of it more.
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout*3/2)
	defer cancel()
	status, err := g.peers.Takeover(ctx, node, ParticipantRef{ParticipantID: id, From: g.self})
	if errors.Is(err, ErrNotMember) {
		return false
	}
	if err != nil || status != http.StatusOK {
		g.log.Warn("handing a participant over failed", "participant", id, "successor", node, "status", status, "err", err)
		return false
	}
	return true
}

// peerNames lists the live peers.
func (g *Gateway) peerNames() []string {
	var names []string
	for _, m := range g.cluster.Members() {
		if !m.Self && m.State == membership.StateAlive {
			names = append(names, m.Name)
		}
	}
	return names
}

// successors orders the peers that may take a participant over by
// rendezvous hashing: stable for a participant, spread evenly over peers.
func successors(id string, peers []string) []string {
	out := slices.Clone(peers)
	slices.SortFunc(out, func(a, b string) int { return cmp.Compare(membership.Score(b, id), membership.Score(a, id)) })
	return out
}

// ReleaseHere exports participant ref.ParticipantID for node ref.From and
// holds the state until that node confirms; or it answers the state held
// for that node already. Export and hold are one step per participant: a
// retried release arriving between them would find the participant gone
// and nothing held, answer 404, and the asking node would start it afresh
// (losing its mailbox). No network I/O happens under the lock.
func (g *Gateway) ReleaseHere(ref ParticipantRef) (*ws.ParticipantState, error) {
	unlock := g.held.releasing.lock(ref.ParticipantID)
	defer unlock()
	// Noted before the export: a delivery that finds the participant gone
	// an instant later must already know where it went. A release refused
	// (below) puts back what was noted before: a node that asks for a
	// participant this one released elsewhere must not draw that one's
	// deliveries to itself (it gives up on a 404 and drops what it
	// buffered).
	prev, noted := g.moved.note(ref.ParticipantID, ref.From, g.now())
	st, res := g.hub.Export(ref.ParticipantID)
	if res == ws.NotHere || res == ws.BeingMoved {
		// Not live here: the answer to an earlier release was lost on its
		// way, and the same state is answered again. A participant live
		// here (back since that release) is newer than any copy: it is
		// exported, or refused while attached.
		if held := g.held.get(ref.ParticipantID, ref.From); held != nil {
			return held, nil
		}
	}
	if res != ws.Exported {
		g.moved.putBack(ref.ParticipantID, prev, noted)
	}
	switch res {
	case ws.NotHere:
		return nil, wire.NewError(http.StatusNotFound, "participant_not_found", "", "the participant is not on this node")
	case ws.Attached:
		return nil, wire.NewError(http.StatusConflict, "participant_attached", "", "the participant is attached here; it is not moved")
	case ws.BeingMoved: // a 503 is retried by the asking peer, with backoff
		return nil, wire.NewError(http.StatusServiceUnavailable, "participant_moving", "", "this node is taking the participant over; ask again")
	}
	if hook := g.held.exported.Load(); hook != nil {
		(*hook)(ref.ParticipantID)
	}
	g.held.hold(&st, ref.From, g.holdFor)
	return &st, nil
}
