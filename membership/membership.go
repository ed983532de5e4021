package membership

import (
	"context"
	"sync"
)

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

// Entry says where one participant lives: on a node of the cluster, or
// behind an external gateway (GatewayURL set, written by the node that
// learned of it). Sessions is what PutLocal is given; lookups leave it
// empty (HomeSessions asks the home).
type Entry struct {
	Participant string   `json:"participant_id"`
	Type        string   `json:"participant_type,omitempty"`
	Node        string   `json:"node"` // the node that writes this entry (the participant's home)
	Sessions    []string `json:"sessions,omitempty"`
	Online      bool     `json:"online"`
	GatewayURL  string   `json:"gateway_url,omitempty"`
}

// Cluster is what the gateway needs from membership: who the nodes are and
// where participants live. The memberlist-backed Gossip and the single node
// (Local) both provide it.
type Cluster interface {
	// Self is this node.
	Self() Member
	// Members lists the nodes this node knows, itself included.
	Members() []Member
	// PutLocal records this node's entry for a participant, sessions
	// included, and queues the records it changes for their owners. The
	// writes never block: the hub calls them with a participant's lock
	// held.
	PutLocal(e Entry)
	// SetLocal records a participant of this node (made if new, its
	// sessions unchanged) with its type and online state.
	SetLocal(id, typ string, online bool)
	// JoinLocal records that a participant of this node joined session
	// (made, offline, if new): one record, whatever its other sessions.
	JoinLocal(id, typ, session string)
	// LeaveLocal records that a participant of this node left session.
	LeaveLocal(id, session string)
	// DeleteLocal removes this node's entry for a participant.
	DeleteLocal(participant string)
	// Sync waits, briefly, until the owners of the records changed so far
	// have them; an attach calls it before its welcome so that a submit
	// on any node right after the welcome finds the participant.
	Sync(ctx context.Context) bool
	// Participant returns the entries of participant id (one per node
	// that hosts it or knows it as external), without sessions.
	Participant(ctx context.Context, id string) ([]Entry, error)
	// Participants is Participant for several ids at once.
	Participants(ctx context.Context, ids []string) (map[string][]Entry, error)
	// Session returns the members of session (Online is not set), without
	// the participants that node except hosts when it is set.
	Session(ctx context.Context, session, except string) ([]Entry, error)
	// HomeSessions returns the sessions of participant id on node, its
	// home.
	HomeSessions(ctx context.Context, node, id string) ([]string, error)
	// NodeURL is the gateway URL of a live node.
	NodeURL(node string) (string, bool)
	// Settled reports whether this node has heard from the cluster: its
	// first join attempt is over. Until then it does not know the owners
	// of the directory's records, so it answers submits with 503 and
	// /readyz with 503.
	Settled() bool
}

// Local is a cluster of one node: no gossip, no peers. It keeps its
// records in the same store an owner uses.
type Local struct {
	localWrites
	name, url string
	held      *records
	mu        sync.Mutex
	own       ownRecords
}

var _ Cluster = (*Local)(nil)

// NewLocal makes the single-node cluster named name, reachable at url.
func NewLocal(name, url string) *Local {
	l := &Local{name: name, url: url, held: newRecords(), own: newOwnRecords()}
	l.localWrites = localWrites{l.change}
	return l
}

// Self is the only member.
func (l *Local) Self() Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Member{Name: l.name, URL: l.url, State: StateAlive, Participants: l.own.hosted, Self: true}
}

// Members lists this node alone.
func (l *Local) Members() []Member { return []Member{l.Self()} }

func (l *Local) change(fn func(*ownRecords) []record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held.apply(msgUpdates, homeMessage{Node: l.name, Records: fn(&l.own)})
}

// Sync has no peers to wait for.
func (l *Local) Sync(context.Context) bool { return true }

// Participant reads this node's records.
func (l *Local) Participant(_ context.Context, id string) ([]Entry, error) {
	es, _ := l.held.lookup(participantKey(id), "")
	return es, nil
}

// Participants reads this node's records.
func (l *Local) Participants(_ context.Context, ids []string) (map[string][]Entry, error) {
	out := make(map[string][]Entry, len(ids))
	for _, id := range ids {
		out[id], _ = l.held.lookup(participantKey(id), "")
	}
	return out, nil
}

// Session reads this node's records.
func (l *Local) Session(_ context.Context, session, except string) ([]Entry, error) {
	es, _ := l.held.lookup(sessionKey(session), except)
	return es, nil
}

// HomeSessions knows this node's participants only.
func (l *Local) HomeSessions(_ context.Context, node, id string) ([]string, error) {
	if node != l.name {
		return nil, ErrUnreachable
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.own.sessionsOf(id), nil
}

// Settled: a node alone has nothing to learn.
func (l *Local) Settled() bool { return true }

// NodeURL knows only this node.
func (l *Local) NodeURL(node string) (string, bool) { return l.url, node == l.name }
