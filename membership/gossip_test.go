package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// fastTimers are the tests' fast memberlist timers, shared with the
// sidecar's and the client's tests.
var fastTimers = testkit.FastGossip

// wire is an in-process stand-in for the sidecar's HTTP transport
// between Gossip nodes (the sidecar's own tests run the real one): a push
// or lookup to a node's URL calls that node's handler, and each push is
// counted with its bytes at the receiver.
type wire struct {
	mu     sync.Mutex
	nodes  map[string]*Gossip // URL → node
	pushes map[string]int     // receiver name → update pushes taken
	bytes  map[string]int     // receiver name → bytes of those pushes
	kinds  map[byte]int       // pushes of each kind
}

func newWire() *wire {
	return &wire{nodes: map[string]*Gossip{}, pushes: map[string]int{}, bytes: map[string]int{}, kinds: map[byte]int{}}
}

func (w *wire) node(url string) (*Gossip, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.nodes[url]
	if g == nil {
		return nil, errors.New("connection refused")
	}
	return g, nil
}

func (w *wire) push(_ context.Context, url string, msg []byte, sig string) error {
	g, err := w.node(url)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.kinds[msg[0]]++
	if msg[0] == msgUpdates { // a change's cost: replaces and digests come from other causes
		w.pushes[g.cfg.NodeName]++
		w.bytes[g.cfg.NodeName] += len(msg)
	}
	w.mu.Unlock()
	return g.HandlePush(msg, sig)
}

func (w *wire) fetch(_ context.Context, url string, req []byte) ([]byte, error) {
	g, err := w.node(url)
	if err != nil {
		return nil, err
	}
	return g.HandleLookup(req)
}

// counts returns the pushes and bytes taken cluster-wide so far.
func (w *wire) counts() (pushes, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.pushes {
		pushes += n
	}
	for _, n := range w.bytes {
		bytes += n
	}
	return pushes, bytes
}

// cut makes a node unreachable over the wire (it died).
func (w *wire) cut(g *Gossip) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.nodes, g.cfg.URL)
}

var nextPort atomic.Int32

// start runs one Gossip node on 127.0.0.1 joined to join (if any), with
// the wire as its transport.
func (w *wire) start(t *testing.T, name string, join ...string) *Gossip {
	t.Helper()
	return w.startWith(t, GossipConfig{NodeName: name, Join: join})
}

// startWith is start with some settings of cfg.
func (w *wire) startWith(t *testing.T, cfg GossipConfig) *Gossip {
	t.Helper()
	cfg.URL = fmt.Sprintf("http://127.0.0.1:%d", 9000+nextPort.Add(1))
	cfg.Bind, cfg.Memberlist, cfg.RejoinInterval = "127.0.0.1:0", fastTimers, 300*time.Millisecond
	cfg.Push, cfg.Fetch, cfg.Logger = w.push, w.fetch, slog.New(slog.DiscardHandler)
	g, err := NewGossip(cfg)
	require.NoError(t, err)
	w.mu.Lock()
	w.nodes[cfg.URL] = g
	w.mu.Unlock()
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// startGossips runs n Gossip nodes on the wire and waits until each
// knows them all.
func startGossips(t *testing.T, w *wire, n int) []*Gossip {
	t.Helper()
	var out []*Gossip
	for i := range n {
		var join []string
		if len(out) > 0 {
			join = []string{out[0].GossipAddr()}
		}
		out = append(out, w.start(t, fmt.Sprint("g", i+1), join...))
	}
	waitMembers(t, out, n)
	return out
}

func waitMembers(t *testing.T, gs []*Gossip, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, g := range gs {
			g.mu.Lock()
			live := len(g.nodes)
			g.mu.Unlock()
			if live != n {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
}

func session(t *testing.T, g *Gossip, s string) []Entry {
	t.Helper()
	es, err := g.Session(context.Background(), s, "")
	if err != nil {
		return nil
	}
	return es
}

func participant(g *Gossip, id string) []Entry {
	es, err := g.Participant(context.Background(), id)
	if err != nil {
		return nil
	}
	return es
}

func TestGossipFindsLocalEntriesAndDropsLeavers(t *testing.T) {
	w := newWire()
	gs := startGossips(t, w, 3)
	gs[1].PutLocal(Entry{Participant: "bob", Type: "ai", Sessions: []string{"s1"}, Online: true})
	require.True(t, gs[1].Sync(context.Background()))
	for _, g := range gs { // read-your-write: found at once, from every node
		es := session(t, g, "s1")
		require.Len(t, es, 1)
		assert.Equal(t, Entry{Participant: "bob", Type: "ai", Node: "g2"}, es[0])
		assert.Equal(t, []Entry{{Participant: "bob", Type: "ai", Node: "g2", Online: true}}, participant(g, "bob"))
	}
	url, ok := gs[0].NodeURL("g2")
	require.True(t, ok)
	assert.Equal(t, gs[1].cfg.URL, url)

	gs[1].DeleteLocal("bob")
	require.True(t, gs[1].Sync(context.Background()))
	for _, g := range gs {
		assert.Empty(t, participant(g, "bob"))
		assert.Empty(t, session(t, g, "s1"))
	}

	gs[2].PutLocal(Entry{Participant: "carol", Sessions: []string{"s2"}, Online: true})
	require.True(t, gs[2].Sync(context.Background()))
	require.Len(t, session(t, gs[0], "s2"), 1)
	require.NoError(t, gs[2].Leave(time.Second))
	require.NoError(t, gs[2].Shutdown())
	w.cut(gs[2])
	require.Eventually(t, func() bool { return len(session(t, gs[0], "s2")) == 0 }, 5*time.Second, 5*time.Millisecond,
		"a node that left loses its records everywhere")
	require.Eventually(t, func() bool {
		for _, m := range gs[0].Members() {
			if m.Name == "g3" {
				return m.State == StateLeft
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
}

// TestGossipJoinCostsOneRecordPerOwner: in a 5-node cluster, a join sends
// at most Replicas pushes (one per owner of the session), and its bytes do
// not grow with the sessions the participant is already in.
func TestGossipJoinCostsOneRecordPerOwner(t *testing.T) {
	w := newWire()
	gs := startGossips(t, w, 5)
	home := gs[0]
	home.SetLocal("agent", "ai", true)
	require.True(t, home.Sync(context.Background()))
	perPush := func(s string) int {
		p0, b0 := w.counts()
		home.JoinLocal("agent", "ai", s)
		require.True(t, home.Sync(context.Background()))
		p1, b1 := w.counts()
		assert.LessOrEqual(t, p1-p0, DefaultReplicas, "a join pushes to the session's owners only")
		require.Positive(t, p1-p0, "g1 is never both owners")
		return (b1 - b0) / (p1 - p0)
	}
	small := perPush("s-000")
	for i := 1; i < 500; i++ {
		home.JoinLocal("agent", "ai", fmt.Sprintf("s-%03d", i))
	}
	require.True(t, home.Sync(context.Background()))
	large := perPush("s-500")
	assert.LessOrEqual(t, large, small+2, "bytes of a push for a join: %d with 1 session, %d with 501", small, large)
	home.PutLocal(Entry{Participant: "agent", Type: "ai", Online: true, Sessions: []string{"s-250", "s-500"}})
	require.True(t, home.Sync(context.Background()))
	for _, g := range gs {
		assert.Len(t, session(t, g, "s-250"), 1)
		assert.Empty(t, session(t, g, "s-100"), "a put leaves the sessions it does not list")
	}
}

// TestGossipOwnersDropADeadHomesRecords: when a home dies, the owners of
// its records drop them (nothing would ever remove them otherwise), and
// the other homes' records stay found.
func TestGossipOwnersDropADeadHomesRecords(t *testing.T) {
	w := newWire()
	gs := startGossips(t, w, 4)
	for i, g := range gs {
		for j := range 20 {
			g.PutLocal(Entry{Participant: fmt.Sprintf("p%d-%d", i, j), Type: "ai", Sessions: []string{fmt.Sprint("s", j)}})
		}
		require.True(t, g.Sync(context.Background()))
	}
	dead := gs[3]
	held := 0
	for _, g := range gs {
		_, of := g.HeldRecords("g4")
		held += of
	}
	require.Equal(t, 40*DefaultReplicas, held, "g4's 40 records are kept by two owners each")
	require.NoError(t, dead.Shutdown()) // no leave: a death
	w.cut(dead)
	require.Eventually(t, func() bool {
		for _, g := range gs[:3] {
			if _, of := g.HeldRecords("g4"); of > 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the owners dropped the dead home's records")
	for j := range 20 {
		es := session(t, gs[0], fmt.Sprint("s", j))
		assert.Len(t, es, 3, "session s%d keeps the live homes' members", j)
	}
}

// TestGossipOwnershipMovesWithoutLosingRecords: while a node joins and
// while one dies, every record stays found from every node (with two
// owners, one of a key's owners has it while the other changes), and
// afterwards each record is kept by exactly its owners.
func TestGossipOwnershipMovesWithoutLosingRecords(t *testing.T) {
	w := newWire()
	gs := startGossips(t, w, 3)
	const n = 60
	for i := range n {
		gs[i%3].PutLocal(Entry{Participant: fmt.Sprint("p", i), Type: "ai", Sessions: []string{fmt.Sprint("s", i)}, Online: true})
	}
	for _, g := range gs {
		require.True(t, g.Sync(context.Background()))
	}
	allFound := func(from []*Gossip) bool {
		for _, g := range from {
			for i := range n {
				if len(session(t, g, fmt.Sprint("s", i))) != 1 || len(participant(g, fmt.Sprint("p", i))) != 1 {
					return false
				}
			}
		}
		return true
	}
	require.True(t, allFound(gs))

	// A node joins: lookups from everyone keep finding every record
	// while it takes over its share.
	stop := make(chan struct{})
	misses := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := range n {
				if len(session(t, gs[i%3], fmt.Sprint("s", i))) != 1 {
					select {
					case misses <- fmt.Sprint("s", i):
					default:
					}
				}
			}
		}
	}()
	late := w.start(t, "g4", gs[0].GossipAddr())
	all := append(slices.Clone(gs), late)
	waitMembers(t, all, 4)
	require.Eventually(t, func() bool { return heldExactly(all, 2*n) }, 10*time.Second, 10*time.Millisecond,
		"every record is kept by exactly its owners once the newcomer took its share")
	close(stop)
	wg.Wait()
	select {
	case s := <-misses:
		t.Fatalf("session %s was not found while a node joined", s)
	default:
	}
	require.True(t, allFound(all))

	// An owner dies (not a home: g4 hosts nobody): nothing is lost.
	require.NoError(t, late.Shutdown())
	w.cut(late)
	waitMembers(t, gs, 3)
	require.True(t, allFound(gs))
	require.Eventually(t, func() bool { return heldExactly(gs, 2*n) }, 10*time.Second, 10*time.Millisecond)
}

// heldExactly reports whether the nodes keep, between them, each of their
// records on exactly its owners: perNode records each, total overall.
func heldExactly(gs []*Gossip, perKind int) bool {
	total := 0
	for _, g := range gs {
		n, _ := g.HeldRecords("")
		total += n
	}
	return total == perKind*DefaultReplicas
}

// TestGossipAntiEntropyRepairsWhatAnOwnerLost: an owner that lost a
// home's records (here: dropped behind the home's back) gets them back
// within an anti-entropy round: the home's digest no longer matches, and
// the owner is sent a replace. An owner that matches costs one digest.
func TestGossipAntiEntropyRepairsWhatAnOwnerLost(t *testing.T) {
	w := newWire()
	a := w.startWith(t, GossipConfig{NodeName: "a", AntiEntropyInterval: 200 * time.Millisecond})
	b := w.startWith(t, GossipConfig{NodeName: "b", Join: []string{a.GossipAddr()}, AntiEntropyInterval: time.Hour})
	waitMembers(t, []*Gossip{a, b}, 2)
	for i := range 10 {
		a.JoinLocal(fmt.Sprint("p", i), "ai", fmt.Sprint("s", i))
	}
	require.True(t, a.Sync(context.Background()))
	_, held := b.HeldRecords("a")
	require.Equal(t, 20, held, "with two nodes, b keeps all of a's records")

	b.held.dropHome("a")
	require.Eventually(t, func() bool {
		_, held := b.HeldRecords("a")
		return held == 20
	}, 10*time.Second, 10*time.Millisecond, "the anti-entropy round never repaired b")

	// In step: the rounds send digests, and no replace follows them.
	kinds := func() (digests, replaces int) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.kinds[msgDigest], w.kinds[msgReplace]
	}
	d0, r0 := kinds()
	require.Eventually(t, func() bool { d, _ := kinds(); return d >= d0+3 }, 10*time.Second, 10*time.Millisecond)
	_, r1 := kinds()
	assert.Equal(t, r0, r1, "a digest that matches costs no replace")
}

func TestGossipDropsUndecodableMessages(t *testing.T) {
	w := newWire()
	gs := startGossips(t, w, 2)
	require.Error(t, gs[0].HandlePush([]byte("garbage"), ""))
	require.Error(t, gs[0].HandlePush([]byte{msgUpdates, '{'}, ""))
	_, err := gs[0].HandleLookup([]byte("{"))
	require.Error(t, err)
	// A raw UDP packet of garbage at the gossip port: memberlist drops it.
	conn, err := net.Dial("udp", gs[0].GossipAddr())
	require.NoError(t, err)
	_, _ = conn.Write([]byte("\x00\x01 not a memberlist packet"))
	require.NoError(t, conn.Close())
	// Still working.
	gs[1].PutLocal(Entry{Participant: "p", Sessions: []string{"s"}, Online: true})
	require.True(t, gs[1].Sync(context.Background()))
	assert.Len(t, session(t, gs[0], "s"), 1)
}

func TestParseGossipKey(t *testing.T) {
	_, err := ParseGossipKey("not base64!")
	assert.Error(t, err)
	_, err = ParseGossipKey("c2hvcnQ=") // "short"
	assert.ErrorContains(t, err, "16, 24 or 32")
	key, err := ParseGossipKey("MDEyMzQ1Njc4OWFiY2RlZg==") // 16 bytes
	require.NoError(t, err)
	assert.Len(t, key, 16)
}

func TestGossipWithDifferentKeysDoNotJoin(t *testing.T) {
	a, err := NewGossip(GossipConfig{NodeName: "a", Bind: "127.0.0.1:0", Key: []byte("0123456789abcdef"),
		Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Shutdown() })
	b, err := NewGossip(GossipConfig{NodeName: "intruder", Bind: "127.0.0.1:0", Key: []byte("fedcba9876543210"),
		Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Shutdown() })
	_, err = b.ml.Join([]string{a.GossipAddr()})
	assert.Error(t, err, "a node without the gossip key cannot join")
	assert.Equal(t, 1, a.ml.NumMembers())
}

// TestGossipKeyRotation: the three steps of docs/SECURITY.md overlap: a
// node on the old key alone, one sending the old key and accepting the new,
// and one sending the new key and accepting the old are one cluster.
func TestGossipKeyRotation(t *testing.T) {
	oldKey, newKey := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	a, err := NewGossip(GossipConfig{NodeName: "a", Bind: "127.0.0.1:0", Key: oldKey,
		Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Shutdown() })
	start := func(name string, key []byte, extra []byte) *Gossip {
		g, err := NewGossip(GossipConfig{NodeName: name, Bind: "127.0.0.1:0", Key: key, ExtraKeys: [][]byte{extra},
			Join: []string{a.GossipAddr()}, Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = g.Shutdown() })
		return g
	}
	b := start("step1", oldKey, newKey)
	require.Eventually(t, func() bool { return a.ml.NumMembers() == 2 }, 5*time.Second, 10*time.Millisecond)
	c, err := NewGossip(GossipConfig{NodeName: "step2", Bind: "127.0.0.1:0", Key: newKey, ExtraKeys: [][]byte{oldKey},
		Join: []string{b.GossipAddr()}, Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Shutdown() })
	require.Eventually(t, func() bool { return b.ml.NumMembers() == 3 && c.ml.NumMembers() >= 2 },
		5*time.Second, 10*time.Millisecond, "the step-1 and step-2 nodes understand each other")
}

// TestARestartedNodeIsHeardAgainAfterItsLeave: a node that said it was
// leaving and came back under its name before memberlist reported a leave
// (a StatefulSet pod restarting fast: memberlist then sees an update, not a
// leave and a join) is listened to in its new life; and a late "leaving" of
// its old life does not drop the new life's entries.
func TestARestartedNodeIsHeardAgainAfterItsLeave(t *testing.T) {
	g := startGossips(t, newWire(), 1)[0]
	metaOf := func(epoch int64) []byte {
		b, err := json.Marshal(meta{URL: "http://127.0.0.1:1", Epoch: epoch})
		require.NoError(t, err)
		return b
	}
	update := func(epoch int64, p string) homeMessage {
		return homeMessage{Node: "pod-0", Epoch: epoch, Records: []record{{Participant: p, Type: "ai", Online: true}, {Participant: p, Session: "s1"}}}
	}
	routed := func(p string) bool {
		es, _ := g.held.lookup(sessionKey("s1"), "")
		for _, e := range es {
			if e.Participant == p && e.Node == "pod-0" {
				return true
			}
		}
		return false
	}

	g.nodeJoined(&memberlist.Node{Name: "pod-0", Meta: metaOf(1)})
	require.NoError(t, g.apply(msgUpdates, update(1, "alice")))
	require.True(t, routed("alice"))
	require.NoError(t, g.apply(msgLeaving, homeMessage{Node: "pod-0", Epoch: 1}))
	require.False(t, routed("alice"), "a leaving node's routes drop at once")

	g.nodeUpdated(&memberlist.Node{Name: "pod-0", Meta: metaOf(2)}) // the new life, seen as an update
	require.NoError(t, g.apply(msgUpdates, update(2, "bob")))
	assert.True(t, routed("bob"), "the new life's records are applied")

	require.NoError(t, g.apply(msgLeaving, homeMessage{Node: "pod-0", Epoch: 1})) // the old life's leave, late
	assert.True(t, routed("bob"), "a late leave of the old life drops nothing of the new one")
	require.NoError(t, g.apply(msgUpdates, update(1, "mallory")))
	assert.False(t, routed("mallory"), "nor is the old life heard again")
	assert.ErrorIs(t, g.apply(msgUpdates, homeMessage{Node: "stranger", Epoch: 1, Records: []record{{Participant: "x", Session: "s1"}}}),
		ErrUnknownNode, "a non-member's records are refused")
	assert.False(t, routed("x"))
}
