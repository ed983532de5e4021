package membership

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
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
	// Participants is how many participants the node hosts, refreshed at
	// most every metaInterval (GET /members reports it).
	Participants int `json:"c,omitempty"`
}

// Gossip is a Cluster built on hashicorp/memberlist, which finds the
// nodes and detects failures. The directory is partitioned over the live
// nodes: each record (where a participant lives, who is in a session) is
// kept by the Replicas nodes ranking highest for its key (ranking.go).
// Each node writes only its own participants' records (writer.go) and
// pushes every change synchronously to the owners of the keys it touches;
// readers ask the owners (lookup.go). When the members change, homes
// re-register the records whose owners changed, and owners drop the
// records of a node that left or died (events.go).
type Gossip struct {
	localWrites // PutLocal, SetLocal, JoinLocal, LeaveLocal, DeleteLocal (writer.go)
	cfg         GossipConfig
	log         *slog.Logger
	epoch       int64
	// signer signs the directory messages this node pushes over HTTP; its
	// public key travels in the gossip metadata (see HandlePush).
	signer ed25519.PrivateKey
	ml     *memberlist.Memberlist
	// created is set once memberlist.Create returned: its goroutines may
	// call our delegates before g.ml is assigned.
	created atomic.Bool
	settled atomic.Bool // see Settled
	// held are the records this node keeps as an owner.
	held *records
	// hosted is how many participants this node hosts (for its metadata).
	hosted atomic.Int64

	mu       sync.Mutex
	w        writer                  // this node's own records and their delivery to owners
	nodes    map[string]meta         // metadata of live nodes (this one included)
	departed map[string]departedNode // dead or left, for Members and to refuse late messages
	leaving  map[string]int64        // nodes that said they are leaving → the epoch (life) that said so
	wake     chan struct{}           // 1-slot: the writer has work
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
func NewGossip(cfg GossipConfig) (*Gossip, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("membership: a node name is required")
	}
	cfg = cfg.withDefaults()
	_, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("membership: make the node's signing key: %w", err)
	}
	g := &Gossip{
		signer:   signer,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gossip"),
		epoch:    time.Now().UnixNano(),
		held:     newRecords(),
		w:        newWriter(),
		nodes:    map[string]meta{},
		departed: map[string]departedNode{},
		leaving:  map[string]int64{},
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	g.localWrites = localWrites{g.change}
	// Nodes started together would run their anti-entropy rounds together:
	// each starts at a random point of the interval.
	g.w.lastFull = time.Now().Add(-rand.N(cfg.AntiEntropyInterval))
	mc, err := g.memberlistConfig()
	if err != nil {
		return nil, err
	}
	if g.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	g.created.Store(true)
	g.wg.Add(3)
	go g.pushLoop()
	go g.joinLoop()
	go g.metaLoop()
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

// Self is this node.
func (g *Gossip) Self() Member {
	return Member{Name: g.cfg.NodeName, URL: g.cfg.URL, State: StateAlive, Participants: int(g.hosted.Load()), Self: true}
}

// Members lists live nodes and, for a while, the dead and departed ones.
// It reads the metadata this node keeps from memberlist's callbacks, not
// memberlist's Members(): those *Node values are rewritten concurrently.
// memberlist does not expose suspicion, so a live member is "alive" until
// declared dead. A peer's participant count is the one in its metadata
// (at most a few seconds old).
func (g *Gossip) Members() []Member {
	var out []Member
	g.mu.Lock()
	for name, m := range g.nodes {
		if name == g.cfg.NodeName {
			continue
		}
		out = append(out, Member{Name: name, URL: m.URL, State: StateAlive, Participants: m.Participants})
	}
	for name, d := range g.departed {
		if _, live := g.nodes[name]; !live {
			out = append(out, Member{Name: name, URL: d.meta.URL, State: d.state})
		}
	}
	g.mu.Unlock()
	out = append(out, g.Self())
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

// liveNodesLocked lists the live nodes' names, this one included, sorted.
func (g *Gossip) liveNodesLocked() []string {
	names := make([]string, 0, len(g.nodes)+1)
	for name := range g.nodes {
		names = append(names, name)
	}
	if _, ok := g.nodes[g.cfg.NodeName]; !ok {
		names = append(names, g.cfg.NodeName) // before memberlist's own join event
	}
	slices.Sort(names)
	return names
}

// Settled reports whether the first join attempt is over: the members it
// found are known, so lookups go to the right owners.
func (g *Gossip) Settled() bool { return g.settled.Load() }

// joinLoop joins the configured peers, retrying with backoff until one
// answers, then again every RejoinInterval (a node cut off by a partition
// comes back; new pods behind a DNS name are found).
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
		g.settled.Store(true) // the first attempt, successful or not, is over
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

// metaInterval: how often this node's participant count is re-advertised
// in its metadata, when it changed.
const metaInterval = 2 * time.Second

// metaLoop keeps the participant count in this node's metadata current.
// memberlist's UpdateNode waits for the gossip to leave, so it runs here,
// never under a lock or in a callback.
func (g *Gossip) metaLoop() {
	defer g.wg.Done()
	t := time.NewTicker(metaInterval)
	defer t.Stop()
	advertised := int64(0)
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		if n := g.hosted.Load(); n != advertised {
			advertised = n
			if err := g.ml.UpdateNode(g.cfg.SyncTimeout); err != nil {
				g.log.Debug("advertising the participant count failed", "err", err)
			}
		}
	}
}

// Leave tells the peers this node is leaving, so they drop its records at
// once, and waits up to timeout for memberlist's leave to spread.
// memberlist does not tell a departure from a death, so the peers are told
// first directly.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.mu.Lock()
	closed := g.closed
	peers := g.liveNodesLocked()
	g.mu.Unlock()
	if closed {
		return nil // memberlist panics on a leave after shutdown
	}
	msg := encodeMessage(msgLeaving, homeMessage{Node: g.cfg.NodeName, Epoch: g.epoch})
	batches := map[string]*batch{}
	for _, name := range peers {
		if name != g.cfg.NodeName {
			batches[name] = &batch{msg: msg}
		}
	}
	g.send(batches)
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
