package membership

import "context"

// Member states, as GET /v1/gateway/members reports them.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Member is one node of the cluster.
type Member struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	State        string `json:"state"`
	Participants int    `json:"participants"`
	Self         bool   `json:"self"`
}

// Cluster is what the gateway needs from membership: who the nodes are and
// where participants live. The memberlist-backed Gossip and the single node
// (Local) both provide it.
type Cluster interface {
	// Self is this node.
	Self() Member
	// Members lists the nodes this node knows, itself included.
	Members() []Member
	// Directory is the cluster-wide participant directory (read only: write
	// this node's entries with PutLocal and DeleteLocal).
	Directory() *Directory
	// PutLocal records this node's entry for a participant (e.Node is set
	// to this node) and shares it with the peers. It must not block: the
	// hub calls it with a participant's lock held.
	PutLocal(e Entry)
	// DeleteLocal removes this node's entry for a participant.
	DeleteLocal(participant string)
	// Sync waits, briefly, until the peers have heard of the local changes
	// made so far; an attach calls it before its welcome so that a submit
	// on any node right after the welcome finds the participant.
	Sync(ctx context.Context) bool
	// NodeURL is the gateway URL of a live node.
	NodeURL(node string) (string, bool)
	// Settled reports whether this node has heard from the cluster: its
	// first join attempt is over and the members it found have sent their
	// state (or a short wait passed). Until then its directory may be
	// partial, so it answers submits with 503 and /readyz with 503.
	Settled() bool
}

// Local is a cluster of one node: no gossip, no peers.
type Local struct {
	name, url string
	dir       *Directory
}

var _ Cluster = (*Local)(nil)

// NewLocal makes the single-node cluster named name, reachable at url.
func NewLocal(name, url string) *Local {
	return &Local{name: name, url: url, dir: NewDirectory()}
}

// Self is the only member.
func (l *Local) Self() Member {
	return Member{Name: l.name, URL: l.url, State: StateAlive, Participants: l.dir.Count(l.name), Self: true}
}

// Members lists this node alone.
func (l *Local) Members() []Member { return []Member{l.Self()} }

// Directory holds this node's own entries.
func (l *Local) Directory() *Directory { return l.dir }

// PutLocal records e as this node's.
func (l *Local) PutLocal(e Entry) {
	e.Node = l.name
	l.dir.Put(e)
}

// DeleteLocal forgets this node's entry for participant.
func (l *Local) DeleteLocal(participant string) { l.dir.Delete(l.name, participant) }

// Sync has no peers to wait for.
func (l *Local) Sync(context.Context) bool { return true }

// Settled: a node alone has nothing to learn.
func (l *Local) Settled() bool { return true }

// NodeURL knows only this node.
func (l *Local) NodeURL(node string) (string, bool) { return l.url, node == l.name }
