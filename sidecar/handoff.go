package sidecar

import (
	"cmp"
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-gw/switchyard/internal/ident"
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
//     dedupe keys, and the old home forgets it, forwarding what still
//     reaches it), then installs that state and the buffered deliveries.
//   - A draining node, after closing its WebSockets with 1001, asks a
//     successor to take over each participant still here (POST
//     /v1/gateway/cluster/takeover), so that events for a participant
//     between homes are kept, not refused; the participant may reconnect
//     anywhere and is taken over again from the successor.

const (
	releasePath  = "/v1/gateway/cluster/release"
	takeoverPath = "/v1/gateway/cluster/takeover"
	// handoffWorkers bounds the takeovers a draining node runs at once.
	handoffWorkers = 16
)

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

func (m *movedTo) note(id, node string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	m.entries[id] = movedEntry{node: node, until: now.Add(movedMemory)}
}

func (m *movedTo) lookup(id string, now time.Time) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[id]; ok && now.Before(e.until) {
		return e.node
	}
	return ""
}

type participantRef struct {
	ParticipantID string `json:"participant_id"`
	From          string `json:"from,omitempty"`
}

// otherHomes lists the peers where participant id lives (the candidates
// for a takeover), the sessions the directory knows for it, and its type.
// A home where it is attached answers the release with 409 and keeps it:
// the directory's online flag may lag behind a reconnect, the home may not.
func (g *Gateway) otherHomes(id string) (nodes []string, sessions []string, typ string) {
	for _, e := range g.cluster.Directory().Participant(id) {
		if e.GatewayURL != "" || e.Node == g.self {
			continue
		}
		nodes = append(nodes, e.Node)
		sessions = append(sessions, e.Sessions...)
		typ = e.Type
	}
	return nodes, sessions, typ
}

// errMoving answers an attach whose participant is being moved between
// other nodes right now; the client retries (the Go client does) and finds
// it settled.
var errMoving = newError(http.StatusServiceUnavailable, "participant_moving", "",
	"the participant is moving between nodes; attach again in a moment")

// takeover moves participant id here from the nodes in from (tried in
// order). It is a no-op when the participant is already here. forAttach
// says a client is waiting to attach: when another node won a race for the
// participant, it follows it there (a few rounds) rather than give up, and
// fails with errMoving rather than start the participant afresh.
func (g *Gateway) takeover(ctx context.Context, id, typ string, sessions []string, from []string, forAttach bool) error {
	p, created := g.hub.Prepare(id, typ, sessions)
	if !created {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout)
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
			from = g.homesElsewhere(id) // where the winner of a race has it now
		}
		for _, node := range from {
			st, status := g.release(ctx, node, id)
			attachedElsewhere = attachedElsewhere || status == http.StatusConflict
			if st != nil {
				g.hub.Install(p, st)
				g.metrics.Handoffs.WithLabelValues("taken").Inc()
				return nil
			}
		}
		if attachedElsewhere || len(g.homesElsewhere(id)) == 0 {
			break
		}
	}
	switch {
	case attachedElsewhere: // it lives on both nodes, each with its own seq
		g.hub.Install(p, nil)
		return nil
	case len(g.homesElsewhere(id)) > 0:
		// Another node has it (a successor and a reconnect raced): every
		// delivery buffered here reached it too.
		g.hub.Abandon(p)
		g.metrics.Handoffs.WithLabelValues("abandoned").Inc()
		if forAttach {
			return errMoving
		}
		return nil
	}
	g.log.Warn("taking a participant over failed; it starts afresh here", "participant", id, "from", from)
	g.metrics.Handoffs.WithLabelValues("failed").Inc()
	g.hub.Install(p, nil)
	return nil
}

// release asks node to hand participant id over; it returns the state, or
// nil and the status the node answered (0: unreachable).
func (g *Gateway) release(ctx context.Context, node, id string) (*ws.ParticipantState, int) {
	base, ok := g.cluster.NodeURL(node)
	if !ok {
		return nil, 0
	}
	req, _ := json.Marshal(participantRef{ParticipantID: id, From: g.self})
	ans, err := g.peers.post(ctx, strings.TrimSuffix(base, "/")+releasePath, req, g.clusterKey, 0)
	if err != nil || ans.Status != http.StatusOK {
		return nil, ans.Status
	}
	var st ws.ParticipantState
	if err := json.Unmarshal(ans.Body, &st); err != nil {
		g.log.Warn("a released participant's state does not decode", "participant", id, "from", node, "err", err)
		return nil, 0
	}
	return &st, http.StatusOK
}

// handOff asks successors to take over every participant still here; a
// draining node calls it after closing its connections.
func (g *Gateway) handOff(ctx context.Context) {
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
	base, ok := g.cluster.NodeURL(node)
	if !ok {
		return false
	}
	req, _ := json.Marshal(participantRef{ParticipantID: id, From: g.self})
	// One request, at most the forward timeout: a successor that is dead,
	// or draining too (503), leaves time for the next within the drain.
	ctx, cancel := context.WithTimeout(ctx, g.forwardTimeout)
	defer cancel()
	ans, err := g.peers.postOnce(ctx, strings.TrimSuffix(base, "/")+takeoverPath, req, g.clusterKey)
	if err != nil || ans.Status != http.StatusOK {
		g.log.Warn("handing a participant over failed", "participant", id, "successor", node, "status", ans.Status, "err", err)
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
	score := func(p string) uint64 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(id))
		return mix(h.Sum64())
	}
	out := slices.Clone(peers)
	slices.SortFunc(out, func(a, b string) int { return cmp.Compare(score(b), score(a)) })
	return out
}

// handleRelease hands a participant's state to the peer taking it over.
func (n *Node) handleRelease(w http.ResponseWriter, r *http.Request) error {
	ref, err := readParticipantRef(w, r)
	if err != nil {
		return err
	}
	// Noted before the export: a delivery that finds the participant gone
	// an instant later must already know where it went.
	n.gw.moved.note(ref.ParticipantID, ref.From, n.gw.now())
	st, res := n.hub.Export(ref.ParticipantID)
	switch res {
	case ws.NotHere:
		return newError(http.StatusNotFound, "participant_not_found", "", "the participant is not on this node")
	case ws.Attached:
		return newError(http.StatusConflict, "participant_attached", "", "the participant is attached here; it is not moved")
	case ws.BeingMoved: // a 503 is retried by the asking peer, with backoff
		return newError(http.StatusServiceUnavailable, "participant_moving", "", "this node is taking the participant over; ask again")
	}
	n.log.Debug("released a participant", "participant", ref.ParticipantID, "to", ref.From, "events", len(st.Events))
	return respond(w, st)
}

// handleTakeover takes a participant over from a draining peer.
func (n *Node) handleTakeover(w http.ResponseWriter, r *http.Request) error {
	ref, err := readParticipantRef(w, r)
	if err != nil {
		return err
	}
	if ref.From == "" {
		return fieldError(codeMissingField, "from", "from names the node to take the participant from")
	}
	if n.draining.Load() {
		return newError(http.StatusServiceUnavailable, "draining", "", "this node is draining too; ask another")
	}
	var sessions []string
	typ := "ai"
	for _, e := range n.cluster.Directory().Participant(ref.ParticipantID) {
		if e.Node == ref.From {
			sessions, typ = e.Sessions, e.Type
		}
	}
	_ = n.gw.takeover(r.Context(), ref.ParticipantID, typ, sessions, []string{ref.From}, false)
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

func readParticipantRef(w http.ResponseWriter, r *http.Request) (participantRef, error) {
	body, err := readBody(w, r, 64<<10)
	if err != nil {
		return participantRef{}, err
	}
	var ref participantRef
	if err := decodeJSON(body, &ref); err != nil {
		return ref, err
	}
	if err := checkID(ref.ParticipantID, "participant_id", ident.MaxParticipantID); err != nil {
		return ref, err
	}
	return ref, nil
}

// mix is splitmix64's finalizer: FNV's high bits vary little between short
// names, and rendezvous hashing compares whole values.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}
