package membership

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
// where participants live. The memberlist-backed cluster and the single
// node (Local) both provide it.
type Cluster interface {
	// Self is this node.
	Self() Member
	// Members lists the nodes this node knows, itself included.
	Members() []Member
	// Directory is the cluster-wide participant directory. This node writes
	// its own entries into it with Node = Self().Name.
	Directory() *Directory
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
