package membership

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipConfig configures a gossiping Cluster. A zero field takes the
// default in its comment.
type GossipConfig struct {
	// NodeName is this node's unique name. Required.
	NodeName string
	// URL is this node's gateway URL, carried in its gossip metadata.
	URL string
	// Version is the software version, carried in the metadata.
	Version string
	// Bind is the gossip listen address host:port (--gossip-bind). Port 0
	// picks a free port. Default 127.0.0.1:7946.
	Bind string
	// Advertise is the address peers reach the gossip port at
	// (--gossip-advertise). Default: the bind address.
	Advertise string
	// Join lists peers to join: host:port pairs or DNS names (a headless
	// Service name resolves to every pod). Joining is retried in the
	// background until it succeeds, and repeated every RejoinInterval so a
	// node cut off by a partition comes back.
	Join []string
	// Key is the AES gossip key (16, 24 or 32 bytes), decoded. Empty: gossip
	// is not encrypted.
	Key []byte
	// ExtraKeys are further gossip keys accepted but not used to send: for
	// rotating the key without downtime (see docs/SECURITY.md).
	ExtraKeys [][]byte
	// Label tags every gossip packet; nodes with another label are ignored.
	// Default "switchyard".
	Label string
	// RejoinInterval: how often Join is retried. Default 30s.
	RejoinInterval time.Duration
	// SyncTimeout bounds how long Sync waits for peers to hear of a local
	// change (an attach waits for it before its welcome). Default 1s.
	SyncTimeout time.Duration
	// DepartedRetention: how long a dead or departed node stays listed by
	// Members. Default 10m.
	DepartedRetention time.Duration
	// Memberlist, when set, adjusts memberlist's configuration (which
	// starts from its LAN defaults) before the cluster is created; tests
	// use it for fast timers.
	Memberlist func(*memberlist.Config)
	// Push, when set, sends a directory message to a peer's gateway URL and
	// returns once the peer applied it (the sidecar posts it over its pooled
	// HTTP connections). sig is this node's signature of msg (see Sign):
	// the receiver passes it to HandlePush, which checks it against the
	// public key the named node gossips. Without Push, changes travel by
	// gossip broadcast and push/pull only, and Sync does not wait for peers.
	Push func(ctx context.Context, peerURL string, msg []byte, sig string) error
	// Transport replaces memberlist's network transport (tests inject
	// faults with it). Its address must match Bind.
	Transport memberlist.NodeAwareTransport
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ParseGossipKey decodes a base64 AES key of 16, 24 or 32 bytes.
func ParseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32 (AES-128, -192 or -256)", n)
	}
	return key, nil
}

// Gossip broadcasts ride in UDP packets of about 1,400 bytes; a change that
// does not fit is left to the direct push and push/pull. The queue keeps at
// most maxQueuedBroadcasts (the oldest are dropped: each is also pushed).
const (
	maxBroadcastBytes   = 1200
	maxQueuedBroadcasts = 4096
)

// meta is a node's gossip metadata (at most 512 bytes).
type meta struct {
	URL     string `json:"url"`
	Version string `json:"v,omitempty"`
	Epoch   int64  `json:"ep"`
	// PublicKey is the node's Ed25519 public key (base64): directory
	// messages pushed over HTTP carry a signature made with its private
	// key, which never leaves the process.
	PublicKey string `json:"pk,omitempty"`
}

// Gossip is a Cluster built on hashicorp/memberlist. Each node writes only
// its own directory entries (PutLocal, DeleteLocal); every change gets a
// version from the node's counter and reaches the peers three ways: pushed
// to each live peer directly (so routing to a new participant works at
// once), gossiped as a broadcast, and repaired by memberlist's periodic
// full-state push/pull. When a node leaves or is declared dead its entries
// are dropped.
type Gossip struct {
	cfg   GossipConfig
	log   *slog.Logger
	dir   *Directory
	epoch int64
	// signer signs the directory messages this node pushes over HTTP; its
	// public key travels in the gossip metadata (see HandlePush).
	signer ed25519.PrivateKey
	ml     *memberlist.Memberlist
	// created is set once memberlist.Create returned: its goroutines may
	// call our delegates (and numNodes) before g.ml is assigned.
	created atomic.Bool
	settled atomic.Bool // see Settled
	queue   *memberlist.TransmitLimitedQueue

	mu       sync.Mutex
	counter  uint64                  // this node's version counter
	own      map[string]uint64       // own participant → version of its last change
	pending  map[string]versioned    // own changes not yet pushed, by participant
	fullTo   map[string]bool         // peers that need our full state (just joined)
	peers    map[string]*peerState   // what we know of each peer's versions
	nodes    map[string]meta         // metadata of live nodes
	departed map[string]departedNode // dead or left, for Members and to refuse late messages
	leaving  map[string]int64        // nodes that said they are leaving → the epoch (life) that said so
	fullFrom map[string]bool         // nodes whose full state has arrived
	queued   uint64                  // sequence of the newest pending change
	pushed   uint64                  // sequence of the newest change pushed to peers
	pushedCh chan struct{}           // closed and replaced whenever pushed advances
	wake     chan struct{}           // 1-slot: the pusher has work
	stop     chan struct{}
	wg       sync.WaitGroup
	closed   bool
}

type departedNode struct {
	meta  meta
	state string
	at    time.Time
}

var _ Cluster = (*Gossip)(nil)

// NewGossip starts gossiping on cfg.Bind and begins joining cfg.Join in the
// background. Shutdown stops it.
func NewGossip(cfg GossipConfig, dir *Directory) (*Gossip, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("membership: a node name is required")
	}
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:7946"
	}
	if cfg.Label == "" {
		cfg.Label = "switchyard"
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = time.Second
	}
	if cfg.DepartedRetention <= 0 {
		cfg.DepartedRetention = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Join = slices.Clone(cfg.Join)
	_, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("membership: make the node's signing key: %w", err)
	}
	g := &Gossip{
		signer:   signer,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gossip"),
		dir:      dir,
		epoch:    time.Now().UnixNano(),
		own:      map[string]uint64{},
		pending:  map[string]versioned{},
		fullTo:   map[string]bool{},
		peers:    map[string]*peerState{},
		nodes:    map[string]meta{},
		departed: map[string]departedNode{},
		leaving:  map[string]int64{},
		fullFrom: map[string]bool{},
		pushedCh: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	mc, err := g.memberlistConfig()
	if err != nil {
		return nil, err
	}
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: g.numNodes, RetransmitMult: mc.RetransmitMult}
	if g.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	g.created.Store(true)
	g.wg.Add(2)
	go g.pushLoop()
	go g.joinLoop()
	return g, nil
}

func (g *Gossip) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.cfg.NodeName
	host, port, err := splitHostPort(g.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("--gossip-bind %q: %w", g.cfg.Bind, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if g.cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(g.cfg.Advertise); err != nil {
			return nil, fmt.Errorf("--gossip-advertise %q: %w", g.cfg.Advertise, err)
		}
	}
	mc.Label = g.cfg.Label
	if len(g.cfg.Key) > 0 {
		if mc.Keyring, err = memberlist.NewKeyring(g.cfg.ExtraKeys, g.cfg.Key); err != nil {
			return nil, fmt.Errorf("gossip key: %w", err)
		}
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.TCPTimeout = 2 * time.Second
	mc.Delegate = &delegate{g}
	mc.Events = &events{g}
	mc.Logger = log.New(io.Discard, "", 0)
	if g.cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
		mc.Logger = slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)
	}
	if g.cfg.Transport != nil {
		mc.Transport = g.cfg.Transport
	}
	if g.cfg.Memberlist != nil {
		g.cfg.Memberlist(mc)
	}
	return mc, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// GossipAddr is the address peers reach this node's gossip at.
func (g *Gossip) GossipAddr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

func (g *Gossip) numNodes() int {
	if !g.created.Load() {
		return 1
	}
	return g.ml.NumMembers()
}

// Directory is the cluster-wide participant directory.
func (g *Gossip) Directory() *Directory { return g.dir }

// Self is this node.
func (g *Gossip) Self() Member {
	return Member{Name: g.cfg.NodeName, URL: g.cfg.URL, State: StateAlive, Participants: g.dir.Count(g.cfg.NodeName), Self: true}
}

// Members lists live nodes and, for a while, the dead and departed ones.
// It reads the metadata this node keeps from memberlist's callbacks, not
// memberlist's Members(): those *Node values are rewritten concurrently.
// memberlist does not expose suspicion, so a live member is "alive" until
// declared dead.
func (g *Gossip) Members() []Member {
	var out []Member
	g.mu.Lock()
	for name, m := range g.nodes {
		out = append(out, Member{Name: name, URL: m.URL, State: StateAlive, Self: name == g.cfg.NodeName})
	}
	for name, d := range g.departed {
		if _, live := g.nodes[name]; !live {
			out = append(out, Member{Name: name, URL: d.meta.URL, State: d.state})
		}
	}
	g.mu.Unlock()
	for i := range out {
		if out[i].State == StateAlive {
			out[i].Participants = g.dir.Count(out[i].Name)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// NodeURL returns the gateway URL of a live node.
func (g *Gossip) NodeURL(node string) (string, bool) {
	if node == g.cfg.NodeName {
		return g.cfg.URL, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.nodes[node]
	return m.URL, ok && m.URL != ""
}

// PutLocal records a change to one of this node's participants and queues
// it for the peers. It never blocks on the network.
func (g *Gossip) PutLocal(e Entry) {
	e.Node = g.cfg.NodeName
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dir.Put(e)
	g.changeLocked(e.Participant, &e)
}

// DeleteLocal records that one of this node's participants is gone.
func (g *Gossip) DeleteLocal(participant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dir.Delete(g.cfg.NodeName, participant)
	g.changeLocked(participant, nil)
}

func (g *Gossip) changeLocked(participant string, e *Entry) {
	g.counter++
	if e == nil {
		delete(g.own, participant)
	} else {
		g.own[participant] = g.counter
	}
	c := versioned{Participant: participant, Version: g.counter}
	if e != nil {
		trimmed := *e
		trimmed.Node, trimmed.Participant = "", "" // carried by the message
		c.Entry = &trimmed
	}
	g.pending[participant] = c
	g.queued++
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Sync waits until the local changes made so far have been pushed to every
// live peer, or SyncTimeout or ctx ends. It reports whether they were.
func (g *Gossip) Sync(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SyncTimeout)
	defer cancel()
	g.mu.Lock()
	target := g.queued
	for g.pushed < target {
		ch := g.pushedCh
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-g.stop:
			return false
		}
		g.mu.Lock()
	}
	g.mu.Unlock()
	return true
}

// pushLoop sends pending local changes to every live peer directly (over
// memberlist's TCP channel) and queues them for gossip, and sends the full
// state to peers that just joined. It is the only goroutine that sends.
func (g *Gossip) pushLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.wake:
		}
		g.mu.Lock()
		changes := make([]versioned, 0, len(g.pending))
		for _, c := range g.pending {
			changes = append(changes, c)
		}
		clear(g.pending)
		fullTo := make([]string, 0, len(g.fullTo))
		for n := range g.fullTo {
			fullTo = append(fullTo, n)
		}
		clear(g.fullTo)
		seq := g.queued
		var full []byte
		if len(fullTo) > 0 {
			full = g.fullStateLocked()
		}
		g.mu.Unlock()

		if len(changes) > 0 {
			slices.SortFunc(changes, func(a, b versioned) int { return cmp.Compare(a.Version, b.Version) })
			msg := encodeMessage(msgUpdates, nodeMessage{Node: g.cfg.NodeName, Epoch: g.epoch, Changes: changes})
			for _, c := range changes {
				one := encodeMessage(msgUpdates, nodeMessage{Node: g.cfg.NodeName, Epoch: g.epoch, Changes: []versioned{c}})
				if len(one) <= maxBroadcastBytes { // larger ones travel by push and push/pull only
					g.queue.QueueBroadcast(&broadcast{name: c.Participant, msg: one})
				}
			}
			g.queue.Prune(maxQueuedBroadcasts)
			g.sendToPeers(msg, nil)
		}
		if full != nil {
			g.sendToPeers(full, fullTo)
		}

		g.mu.Lock()
		if seq > g.pushed {
			g.pushed = seq
			close(g.pushedCh)
			g.pushedCh = make(chan struct{})
		}
		g.mu.Unlock()
	}
}

// sendToPeers pushes msg to the named live peers (nil: all) with Push, in
// parallel, and waits for them (bounded by SyncTimeout). Peers whose URL is
// not known yet are skipped: they get our full state when they join.
// Without Push nothing is sent directly; broadcasts and push/pull carry
// the change. (memberlist's SendReliable takes a *Node from Members(),
// whose address memberlist rewrites concurrently: not safe to use.)
func (g *Gossip) sendToPeers(msg []byte, only []string) {
	if g.cfg.Push == nil {
		return
	}
	g.mu.Lock()
	targets := map[string]string{}
	for name, m := range g.nodes {
		if name != g.cfg.NodeName && m.URL != "" && (only == nil || slices.Contains(only, name)) {
			targets[name] = m.URL
		}
	}
	g.mu.Unlock()
	sig := g.Sign(msg)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.SyncTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for name, url := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.cfg.Push(ctx, url, msg, sig); err != nil {
				g.log.Debug("direct push failed; gossip and push/pull will repair", "peer", name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// fullStateLocked encodes every entry this node owns, with its counter.
func (g *Gossip) fullStateLocked() []byte {
	m := nodeMessage{Node: g.cfg.NodeName, Epoch: g.epoch, Counter: g.counter}
	for _, e := range g.dir.NodeEntries(g.cfg.NodeName) {
		c := versioned{Participant: e.Participant, Version: g.own[e.Participant]}
		trimmed := e
		trimmed.Node, trimmed.Participant = "", ""
		c.Entry = &trimmed
		m.Changes = append(m.Changes, c)
	}
	return encodeMessage(msgFullState, m)
}

// joinLoop joins the configured peers, retrying with backoff until one
// answers, then again every RejoinInterval (a node cut off by a partition
// comes back; new pods behind a DNS name are found).
// Settled reports whether the first join attempt is over and every member
// found has sent its full state (or SettleTimeout passed).
func (g *Gossip) Settled() bool { return g.settled.Load() }

// settle waits, after the first join attempt, for the full state of every
// member it found, at most SettleTimeout.
func (g *Gossip) settle() {
	deadline := time.Now().Add(settleTimeout)
	for time.Now().Before(deadline) {
		g.mu.Lock()
		missing := 0
		for name := range g.nodes {
			if name != g.cfg.NodeName && !g.fullFrom[name] {
				missing++
			}
		}
		g.mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-g.stop:
			return
		case <-time.After(10 * time.Millisecond): // polling a few maps until they fill, at most settleTimeout
		}
	}
	g.settled.Store(true)
}

// settleTimeout bounds how long a joining node waits for its peers' state.
const settleTimeout = 2 * time.Second

func (g *Gossip) joinLoop() {
	defer g.wg.Done()
	if len(g.cfg.Join) == 0 {
		g.settled.Store(true)
		return
	}
	backoff := 200 * time.Millisecond
	joined := false
	for {
		n, err := g.ml.Join(g.cfg.Join)
		if !g.settled.Load() {
			g.settle() // the first attempt, successful or not, is over
		}
		wait := g.cfg.RejoinInterval
		switch {
		case n > 0:
			if !joined {
				g.log.Info("joined the cluster", "contacted", n, "members", g.ml.NumMembers())
			}
			joined = true
		case !joined:
			g.log.Warn("joining the cluster failed; retrying", "join", g.cfg.Join, "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, g.cfg.RejoinInterval)
		default:
			g.log.Debug("rejoin contacted no peer", "err", err)
		}
		select {
		case <-g.stop:
			return
		case <-time.After(wait):
		}
	}
}

// Leave tells the peers this node is leaving, so they drop its routes at
// once, and waits up to timeout for the message to spread. memberlist does
// not tell a departure from a death, so the peers are told first directly.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return nil // memberlist panics on a leave after shutdown
	}
	msg := encodeMessage(msgLeaving, nodeMessage{Node: g.cfg.NodeName, Epoch: g.epoch})
	g.queue.QueueBroadcast(&broadcast{name: "leaving:" + g.cfg.NodeName, msg: msg})
	g.sendToPeers(msg, nil)
	return g.ml.Leave(timeout)
}

// Shutdown stops gossiping and the background goroutines. Call Leave first
// for a graceful exit. Safe to call more than once.
func (g *Gossip) Shutdown() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	close(g.stop)
	g.mu.Unlock()
	err := g.ml.Shutdown()
	g.wg.Wait()
	return err
}

// ErrNotSender is returned by HandlePush for a message whose signature
// was not made by the node the message names: whoever pushed it does not
// speak for that node, and nothing was applied.
var ErrNotSender = errors.New("the message is not signed by the node it names")

// Sign is this node's signature of a directory message it pushes, in
// base64 (GossipConfig.Push carries it; the receiver checks it with
// HandlePush).
func (g *Gossip) Sign(msg []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(g.signer, msg))
}

func (g *Gossip) publicKey() string {
	return base64.StdEncoding.EncodeToString(g.signer.Public().(ed25519.PublicKey))
}

// HandlePush applies a directory message a peer pushed (see
// GossipConfig.Push). sig must be the signature of data by the node the
// message names, checked against the public key that node gossips: each
// node is the only writer of its own entries, so a message naming another
// node than its signer is refused with ErrNotSender and changes nothing.
// A message from a node that is not a member is ignored, as by gossip.
func (g *Gossip) HandlePush(data []byte, sig string) error {
	kind, m, err := decodeMessage(data)
	if err != nil {
		return err
	}
	if m.Node == g.cfg.NodeName {
		return ErrNotSender // only this node speaks for itself; a peer never pushes our own entries
	}
	g.mu.Lock()
	peer, member := g.nodes[m.Node]
	g.mu.Unlock()
	if member && !validSignature(peer.PublicKey, data, sig) {
		return ErrNotSender
	}
	g.apply(kind, m)
	return nil
}

// validSignature reports whether sig (base64) is a signature of data by
// the Ed25519 public key pk (base64).
func validSignature(pk string, data []byte, sig string) bool {
	key, err := base64.StdEncoding.DecodeString(pk)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return false
	}
	s, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(s) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(key, data, s)
}

// handleMessage applies a peer's message. It runs in memberlist's receive
// path: it must not block and must not call into memberlist.
func (g *Gossip) handleMessage(data []byte) {
	kind, m, err := decodeMessage(data)
	if err != nil {
		g.log.Warn("dropped a gossip message that does not decode", "err", err, "bytes", len(data))
		return
	}
	g.apply(kind, m)
}

func (g *Gossip) apply(kind byte, m nodeMessage) {
	if m.Node == g.cfg.NodeName {
		return // our own, echoed back
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if d, gone := g.departed[m.Node]; gone && kind == msgLeaving {
		d.state = StateLeft // memberlist's own leave message came first
		g.departed[m.Node] = d
		return
	}
	if _, member := g.nodes[m.Node]; !member {
		// Not (or no longer) a member: a late message from a node that left,
		// or one from a stranger. A node that joins sends its full state
		// once it is a member.
		g.log.Debug("ignored a directory message from a non-member", "peer", m.Node)
		return
	}
	if m.Epoch < g.nodes[m.Node].Epoch {
		return // from an earlier life of that node: a late "leaving" must not drop the new life's entries
	}
	if kind == msgLeaving {
		g.leaving[m.Node] = m.Epoch
		delete(g.peers, m.Node)
		g.dir.DropNode(m.Node)
		return
	}
	if ep, ok := g.leaving[m.Node]; ok {
		if m.Epoch <= ep {
			return // the life that is leaving
		}
		// A new life under the same name (a restarted StatefulSet pod)
		// whose join memberlist saw as an update, not a leave and a join.
		delete(g.leaving, m.Node)
	}
	if kind == msgFullState {
		g.fullFrom[m.Node] = true
	}
	ps := g.peers[m.Node]
	if ps == nil {
		ps = &peerState{versions: map[string]uint64{}}
		g.peers[m.Node] = ps
	}
	ps.merge(g.dir, kind, m)
}

func (g *Gossip) nodeJoined(n *memberlist.Node) {
	var m meta
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		g.log.Warn("a node's metadata does not decode", "peer", n.Name, "err", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes[n.Name] = m
	delete(g.departed, n.Name)
	delete(g.leaving, n.Name)
	if n.Name != g.cfg.NodeName {
		g.fullTo[n.Name] = true // it may not know our participants yet
		select {
		case g.wake <- struct{}{}:
		default:
		}
		g.log.Info("node joined", "peer", n.Name, "url", m.URL)
	}
}

func (g *Gossip) nodeLeft(n *memberlist.Node) {
	g.mu.Lock()
	defer g.mu.Unlock()
	state := StateDead
	if _, ok := g.leaving[n.Name]; ok {
		state = StateLeft
	}
	delete(g.leaving, n.Name)
	g.departed[n.Name] = departedNode{meta: g.nodes[n.Name], state: state, at: time.Now()}
	delete(g.nodes, n.Name)
	delete(g.peers, n.Name)
	delete(g.fullFrom, n.Name)
	g.dir.DropNode(n.Name)
	for name, d := range g.departed { // prune the old ones
		if time.Since(d.at) > g.cfg.DepartedRetention {
			delete(g.departed, name)
		}
	}
	g.log.Info("node left; its participants are no longer routed to", "peer", n.Name, "state", state)
}

func (g *Gossip) nodeUpdated(n *memberlist.Node) {
	var m meta
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old, known := g.nodes[n.Name]
	g.nodes[n.Name] = m
	if !known || m.Epoch == old.Epoch || n.Name == g.cfg.NodeName {
		return
	}
	// The node restarted under its name and memberlist saw the new life as
	// an update (its leave never reached us, or came after its rejoin):
	// forget the old life, as a leave and a join would have, and send the
	// new one our full state.
	if ep, ok := g.leaving[n.Name]; ok && ep < m.Epoch {
		delete(g.leaving, n.Name)
	}
	delete(g.fullFrom, n.Name)
	g.fullTo[n.Name] = true
	select {
	case g.wake <- struct{}{}:
	default:
	}
	g.log.Info("node restarted", "peer", n.Name, "url", m.URL)
}
