package membership

import (
	"slices"
	"strings"
	"sync"
)

// Entry says where one participant lives: on a node of the cluster, or
// behind an external gateway (GatewayURL set, owned by the node that
// learned of it).
type Entry struct {
	Participant string   `json:"participant_id"`
	Type        string   `json:"participant_type,omitempty"`
	Node        string   `json:"node"` // the node that owns (writes) this entry
	Sessions    []string `json:"sessions,omitempty"`
	Online      bool     `json:"online"`
	GatewayURL  string   `json:"gateway_url,omitempty"`
}

// Directory is the replicated participant directory: for every node, the
// entries that node wrote about its own participants. Each node is the only
// writer of its entries; the cluster layer copies the others' in. It is safe
// for concurrent use and never calls out while holding its lock.
type Directory struct {
	mu     sync.RWMutex
	byNode map[string]map[string]Entry // node → participant → entry
	// bySession: session → writer group → the participants in it. Grouped
	// so that a router can skip the participants its own node hosts, which
	// it finds in its hub, without visiting them one by one.
	bySession map[string]map[group]map[string]struct{}
}

// group is the entries one node wrote of one kind: participants it hosts,
// or external ones (behind a gateway) it learned of.
type group struct {
	node     string
	external bool
}

func groupOf(e Entry) group { return group{e.Node, e.GatewayURL != ""} }

// NewDirectory makes an empty directory.
func NewDirectory() *Directory {
	return &Directory{byNode: map[string]map[string]Entry{}, bySession: map[string]map[group]map[string]struct{}{}}
}

// Put adds or replaces e (keyed by e.Node and e.Participant).
func (d *Directory) Put(e Entry) {
	e.Sessions = slices.Clone(e.Sessions)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deleteLocked(e.Node, e.Participant)
	nodeEntries := d.byNode[e.Node]
	if nodeEntries == nil {
		nodeEntries = map[string]Entry{}
		d.byNode[e.Node] = nodeEntries
	}
	nodeEntries[e.Participant] = e
	g := groupOf(e)
	for _, s := range e.Sessions {
		groups := d.bySession[s]
		if groups == nil {
			groups = map[group]map[string]struct{}{}
			d.bySession[s] = groups
		}
		set := groups[g]
		if set == nil {
			set = map[string]struct{}{}
			groups[g] = set
		}
		set[e.Participant] = struct{}{}
	}
}

// Delete removes node's entry for participant.
func (d *Directory) Delete(node, participant string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deleteLocked(node, participant)
}

func (d *Directory) deleteLocked(node, participant string) {
	old, ok := d.byNode[node][participant]
	if !ok {
		return
	}
	delete(d.byNode[node], participant)
	g := groupOf(old)
	for _, s := range old.Sessions {
		groups := d.bySession[s]
		delete(groups[g], participant)
		if len(groups[g]) == 0 {
			delete(groups, g)
		}
		if len(groups) == 0 {
			delete(d.bySession, s)
		}
	}
}

// DropNode removes every entry node wrote (it left or died).
func (d *Directory) DropNode(node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p := range d.byNode[node] {
		d.deleteLocked(node, p)
	}
	delete(d.byNode, node)
}

// Session returns the entries of session's participants, ordered by
// participant then node. Returned entries share their Sessions slices with
// the directory: callers must not modify them.
func (d *Directory) Session(session string) []Entry {
	return d.SessionExcept(session, "")
}

// SessionExcept is Session without the participants node hosts (external
// participants node learned of stay in): a router finds its own node's
// members in its hub, and a session of a thousand local members costs it
// nothing here.
func (d *Directory) SessionExcept(session, node string) []Entry {
	skip := group{node: node}
	d.mu.RLock()
	n := 0
	for g, participants := range d.bySession[session] {
		if g != skip {
			n += len(participants)
		}
	}
	out := make([]Entry, 0, n)
	for g, participants := range d.bySession[session] {
		if g == skip {
			continue
		}
		entries := d.byNode[g.node]
		for p := range participants {
			out = append(out, entries[p])
		}
	}
	d.mu.RUnlock()
	sortEntries(out)
	return out
}

// Participant returns every entry for participant (one per node it is on).
func (d *Directory) Participant(participant string) []Entry {
	d.mu.RLock()
	var out []Entry
	for _, entries := range d.byNode {
		if e, ok := entries[participant]; ok {
			out = append(out, e)
		}
	}
	d.mu.RUnlock()
	sortEntries(out)
	return out
}

// NodeEntries returns a copy of the entries node wrote.
func (d *Directory) NodeEntries(node string) []Entry {
	d.mu.RLock()
	out := make([]Entry, 0, len(d.byNode[node]))
	for _, e := range d.byNode[node] {
		out = append(out, e)
	}
	d.mu.RUnlock()
	sortEntries(out)
	return out
}

// Count returns how many participants node hosts (external ones excluded).
func (d *Directory) Count(node string) int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for _, e := range d.byNode[node] {
		if e.GatewayURL == "" {
			n++
		}
	}
	return n
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := strings.Compare(a.Participant, b.Participant); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
}
