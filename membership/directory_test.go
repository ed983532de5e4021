package membership

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ids lists entries as "participant@node".
func ids(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Participant + "@" + e.Node
	}
	return out
}

// sessionIndexConsistent checks that bySession holds exactly the
// participants whose current entry lists the session, each under its
// writer's group, and no empty sets.
func sessionIndexConsistent(t *testing.T, d *Directory) {
	t.Helper()
	d.mu.RLock()
	defer d.mu.RUnlock()
	want := map[string]map[group]map[string]struct{}{}
	for node, entries := range d.byNode {
		for p, e := range entries {
			require.Equal(t, node, e.Node, "entry filed under the wrong node")
			require.Equal(t, p, e.Participant, "entry filed under the wrong participant")
			for _, s := range e.Sessions {
				if want[s] == nil {
					want[s] = map[group]map[string]struct{}{}
				}
				g := group{node, e.GatewayURL != ""}
				if want[s][g] == nil {
					want[s][g] = map[string]struct{}{}
				}
				want[s][g][p] = struct{}{}
			}
		}
	}
	require.Equal(t, want, d.bySession)
}

func TestDirectorySessionExceptSkipsOnlyTheNodesHostedParticipants(t *testing.T) {
	d := NewDirectory()
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: []string{"s"}})
	d.Put(Entry{Participant: "bob", Node: "n2", Sessions: []string{"s"}})
	d.Put(Entry{Participant: "carol", Node: "n1", Sessions: []string{"s"}, GatewayURL: "http://gw.example/"})
	d.Put(Entry{Participant: "dave", Node: "n2", Sessions: []string{"other"}})
	sessionIndexConsistent(t, d)

	assert.Equal(t, []string{"alice@n1", "bob@n2", "carol@n1"}, ids(d.Session("s")))
	assert.Equal(t, []string{"bob@n2", "carol@n1"}, ids(d.SessionExcept("s", "n1")),
		"n1 hosts alice (skipped); carol is external, learned by n1, and stays")
	assert.Equal(t, []string{"alice@n1", "carol@n1"}, ids(d.SessionExcept("s", "n2")))

	// An entry turning external moves between groups.
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: []string{"s"}, GatewayURL: "http://gw.example/"})
	sessionIndexConsistent(t, d)
	assert.Equal(t, []string{"alice@n1", "bob@n2", "carol@n1"}, ids(d.SessionExcept("s", "n1")))
	d.Delete("n1", "alice")
	d.DropNode("n2")
	sessionIndexConsistent(t, d)
	assert.Equal(t, []string{"carol@n1"}, ids(d.SessionExcept("s", "n1")))
}

func TestDirectoryPutAndReplace(t *testing.T) {
	d := NewDirectory()
	assert.Empty(t, d.Session("s1"))
	assert.Empty(t, d.Participant("alice"))
	assert.Empty(t, d.NodeEntries("n1"))

	d.Put(Entry{Participant: "alice", Type: "human", Node: "n1", Sessions: []string{"s1", "s2"}, Online: true})
	d.Put(Entry{Participant: "bob", Node: "n1", Sessions: []string{"s2"}})
	assert.Equal(t, []string{"alice@n1"}, ids(d.Session("s1")))
	assert.Equal(t, []string{"alice@n1", "bob@n1"}, ids(d.Session("s2")))
	got := d.Participant("alice")
	require.Len(t, got, 1)
	assert.Equal(t, Entry{Participant: "alice", Type: "human", Node: "n1", Sessions: []string{"s1", "s2"}, Online: true}, got[0])
	sessionIndexConsistent(t, d)

	// Replacing alice's entry moves her between sessions: out of s1, into s3.
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: []string{"s2", "s3"}, Online: false})
	assert.Empty(t, d.Session("s1"), "the old session no longer lists her")
	assert.Equal(t, []string{"alice@n1", "bob@n1"}, ids(d.Session("s2")))
	assert.Equal(t, []string{"alice@n1"}, ids(d.Session("s3")))
	got = d.Participant("alice")
	require.Len(t, got, 1, "a replace does not add a second entry")
	assert.False(t, got[0].Online)
	assert.Equal(t, []string{"s2", "s3"}, got[0].Sessions)
	assert.Len(t, d.NodeEntries("n1"), 2)
	sessionIndexConsistent(t, d)

	// Replacing with no sessions removes her from all of them.
	d.Put(Entry{Participant: "alice", Node: "n1"})
	assert.Equal(t, []string{"bob@n1"}, ids(d.Session("s2")))
	assert.Empty(t, d.Session("s3"))
	assert.Len(t, d.Participant("alice"), 1)
	sessionIndexConsistent(t, d)
}

func TestDirectoryPutCopiesSessions(t *testing.T) {
	d := NewDirectory()
	sessions := []string{"s1", "s2"}
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: sessions})
	sessions[0] = "changed"
	assert.Equal(t, []string{"s1", "s2"}, d.Participant("alice")[0].Sessions, "the directory keeps its own copy")
	assert.Len(t, d.Session("s1"), 1)
	assert.Empty(t, d.Session("changed"))
	sessionIndexConsistent(t, d)
}

func TestDirectoryDelete(t *testing.T) {
	d := NewDirectory()
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: []string{"s1"}})
	d.Put(Entry{Participant: "alice", Node: "n2", Sessions: []string{"s1"}})
	d.Put(Entry{Participant: "bob", Node: "n1", Sessions: []string{"s1"}})

	d.Delete("n1", "alice")
	assert.Equal(t, []string{"alice@n2", "bob@n1"}, ids(d.Session("s1")), "only n1's entry for alice goes")
	assert.Equal(t, []string{"alice@n2"}, ids(d.Participant("alice")))
	assert.Equal(t, []string{"bob@n1"}, ids(d.NodeEntries("n1")))
	sessionIndexConsistent(t, d)

	// Deleting what is not there is a no-op.
	d.Delete("n1", "alice")
	d.Delete("n9", "bob")
	d.Delete("n1", "nobody")
	assert.Equal(t, []string{"alice@n2", "bob@n1"}, ids(d.Session("s1")))
	sessionIndexConsistent(t, d)

	d.Delete("n2", "alice")
	d.Delete("n1", "bob")
	assert.Empty(t, d.Session("s1"))
	d.mu.RLock()
	assert.Empty(t, d.bySession, "an emptied session leaves no index entry behind")
	d.mu.RUnlock()
	sessionIndexConsistent(t, d)
}

func TestDirectoryDropNode(t *testing.T) {
	d := NewDirectory()
	for i := range 5 {
		d.Put(Entry{Participant: fmt.Sprintf("p%d", i), Node: "n1", Sessions: []string{"shared", fmt.Sprintf("only-n1-%d", i)}})
	}
	d.Put(Entry{Participant: "ext", Node: "n1", Sessions: []string{"shared"}, GatewayURL: "https://other.example"})
	d.Put(Entry{Participant: "q", Node: "n2", Sessions: []string{"shared"}})
	d.Put(Entry{Participant: "p0", Node: "n2", Sessions: []string{"n2-only"}})
	require.Len(t, d.Session("shared"), 7)

	d.DropNode("n1")
	assert.Empty(t, d.NodeEntries("n1"))
	assert.Equal(t, 0, d.Count("n1"))
	assert.Equal(t, []string{"q@n2"}, ids(d.Session("shared")))
	for i := range 5 {
		assert.Empty(t, d.Session(fmt.Sprintf("only-n1-%d", i)))
	}
	assert.Empty(t, d.Participant("ext"))
	assert.Equal(t, []string{"p0@n2"}, ids(d.Participant("p0")), "another node's entry for the same participant stays")
	assert.Equal(t, []string{"p0@n2"}, ids(d.Session("n2-only")))
	d.mu.RLock()
	_, hasNode := d.byNode["n1"]
	d.mu.RUnlock()
	assert.False(t, hasNode, "the node's map is released")
	sessionIndexConsistent(t, d)

	// Dropping an unknown node, or twice, is harmless; the node can come back.
	d.DropNode("n1")
	d.DropNode("nobody")
	d.Put(Entry{Participant: "p1", Node: "n1", Sessions: []string{"shared"}})
	assert.Equal(t, []string{"p1@n1", "q@n2"}, ids(d.Session("shared")))
	sessionIndexConsistent(t, d)
}

func TestDirectorySessionOrdering(t *testing.T) {
	d := NewDirectory()
	// Inserted in scrambled order; the result is by participant, then node.
	for _, e := range []Entry{
		{Participant: "carol", Node: "n2"},
		{Participant: "alice", Node: "n3"},
		{Participant: "bob", Node: "n1"},
		{Participant: "alice", Node: "n1"},
		{Participant: "carol", Node: "n1"},
		{Participant: "alice", Node: "n2"},
		{Participant: "Zed", Node: "n1"},
	} {
		e.Sessions = []string{"s"}
		d.Put(e)
	}
	want := []string{"Zed@n1", "alice@n1", "alice@n2", "alice@n3", "bob@n1", "carol@n1", "carol@n2"}
	for range 20 { // map iteration order varies; the result must not
		require.Equal(t, want, ids(d.Session("s")))
	}
	assert.Equal(t, []string{"alice@n1", "alice@n2", "alice@n3"}, ids(d.Participant("alice")))
	assert.Equal(t, []string{"Zed@n1", "alice@n1", "bob@n1", "carol@n1"}, ids(d.NodeEntries("n1")))
}

func TestDirectoryParticipantAcrossNodes(t *testing.T) {
	d := NewDirectory()
	d.Put(Entry{Participant: "alice", Node: "n2", Sessions: []string{"s2"}, Online: true})
	d.Put(Entry{Participant: "alice", Node: "n1", Sessions: []string{"s1"}, Online: false})
	d.Put(Entry{Participant: "bob", Node: "n1"})
	got := d.Participant("alice")
	require.Equal(t, []string{"alice@n1", "alice@n2"}, ids(got))
	assert.Equal(t, []string{"s1"}, got[0].Sessions)
	assert.False(t, got[0].Online)
	assert.Equal(t, []string{"s2"}, got[1].Sessions)
	assert.True(t, got[1].Online)
	assert.Equal(t, []string{"alice@n1"}, ids(d.Session("s1")))
	assert.Equal(t, []string{"alice@n2"}, ids(d.Session("s2")))

	// The returned slice is the caller's.
	got[0].Participant = "mallory"
	assert.Equal(t, []string{"alice@n1", "alice@n2"}, ids(d.Participant("alice")))
}

func TestDirectoryNodeEntries(t *testing.T) {
	d := NewDirectory()
	d.Put(Entry{Participant: "b", Node: "n1", Sessions: []string{"s"}})
	d.Put(Entry{Participant: "a", Node: "n1", GatewayURL: "https://gw.example"})
	d.Put(Entry{Participant: "c", Node: "n2"})
	got := d.NodeEntries("n1")
	require.Equal(t, []string{"a@n1", "b@n1"}, ids(got))
	assert.Equal(t, "https://gw.example", got[0].GatewayURL)
	assert.Equal(t, []string{"c@n2"}, ids(d.NodeEntries("n2")))
	assert.NotNil(t, d.NodeEntries("nobody"))
	assert.Empty(t, d.NodeEntries("nobody"))

	// A copy: changing it does not change the directory.
	got[0] = Entry{Participant: "zzz", Node: "n1"}
	assert.Equal(t, []string{"a@n1", "b@n1"}, ids(d.NodeEntries("n1")))
}

func TestDirectoryCountExcludesExternal(t *testing.T) {
	d := NewDirectory()
	assert.Equal(t, 0, d.Count("n1"))
	d.Put(Entry{Participant: "a", Node: "n1"})
	d.Put(Entry{Participant: "b", Node: "n1", Online: true})
	d.Put(Entry{Participant: "ext1", Node: "n1", GatewayURL: "https://gw1.example"})
	d.Put(Entry{Participant: "ext2", Node: "n1", GatewayURL: "https://gw2.example"})
	d.Put(Entry{Participant: "c", Node: "n2"})
	assert.Equal(t, 2, d.Count("n1"), "external participants are not hosted by the node")
	assert.Equal(t, 1, d.Count("n2"))
	assert.Len(t, d.NodeEntries("n1"), 4, "but they are its entries")

	// An entry that turns external (or back) is counted accordingly.
	d.Put(Entry{Participant: "a", Node: "n1", GatewayURL: "https://gw3.example"})
	assert.Equal(t, 1, d.Count("n1"))
	d.Put(Entry{Participant: "ext1", Node: "n1"})
	assert.Equal(t, 2, d.Count("n1"))
	d.Delete("n1", "b")
	assert.Equal(t, 1, d.Count("n1"))
}

func TestLocalCluster(t *testing.T) {
	l := NewLocal("node-a", "http://127.0.0.1:7000")
	var c Cluster = l
	self := c.Self()
	assert.Equal(t, Member{Name: "node-a", URL: "http://127.0.0.1:7000", State: StateAlive, Participants: 0, Self: true}, self)
	assert.Equal(t, []Member{self}, c.Members())
	require.NotNil(t, c.Directory())
	assert.Same(t, c.Directory(), l.Directory(), "the same directory every time")

	// Self counts this node's hosted participants, live.
	c.Directory().Put(Entry{Participant: "p1", Node: "node-a", Online: true})
	c.Directory().Put(Entry{Participant: "p2", Node: "node-a"})
	c.Directory().Put(Entry{Participant: "ext", Node: "node-a", GatewayURL: "https://gw.example"})
	c.Directory().Put(Entry{Participant: "p3", Node: "someone-else"})
	assert.Equal(t, 2, c.Self().Participants)
	members := c.Members()
	require.Len(t, members, 1)
	assert.Equal(t, 2, members[0].Participants)
	assert.True(t, members[0].Self)
	assert.Equal(t, StateAlive, members[0].State)

	// Two Locals do not share a directory.
	other := NewLocal("node-b", "http://127.0.0.1:7001")
	assert.NotSame(t, l.Directory(), other.Directory())
	assert.Empty(t, other.Directory().Participant("p1"))
}

// TestDirectoryConcurrent hammers one directory from several goroutines;
// run with -race. Each writer owns one node, as in the cluster.
func TestDirectoryConcurrent(t *testing.T) {
	const writers, rounds, participants = 4, 1000, 16
	d := NewDirectory()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)

	for w := 0; w < writers; w++ {
		node := fmt.Sprintf("n%d", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				p := fmt.Sprintf("p%d", i%participants)
				switch i % 5 {
				case 0, 1, 2:
					d.Put(Entry{Participant: p, Node: node, Sessions: []string{"all", fmt.Sprintf("s%d", i%3)}, Online: i%2 == 0})
				case 3:
					d.Delete(node, p)
				case 4:
					if i%50 == 4 {
						d.DropNode(node)
					}
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for range 300 { // bounded: spinning readers would slow the writers for nothing
				select {
				case <-stop:
					return
				default:
				}
				for _, e := range d.Session("all") {
					if !slices.Contains(e.Sessions, "all") {
						select {
						case errs <- fmt.Errorf("Session(all) returned %s@%s with sessions %v", e.Participant, e.Node, e.Sessions):
						default:
						}
					}
				}
				es := d.Session("s1")
				if !slices.IsSortedFunc(es, func(a, b Entry) int {
					if a.Participant != b.Participant {
						return strings.Compare(a.Participant, b.Participant)
					}
					return strings.Compare(a.Node, b.Node)
				}) {
					select {
					case errs <- fmt.Errorf("Session(s1) not sorted: %v", ids(es)):
					default:
					}
				}
				_ = d.Participant("p3")
				_ = d.NodeEntries("n1")
				_ = d.Count("n2")
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	sessionIndexConsistent(t, d)

	// Every node's final state matches a sequential replay of its own writes.
	for w := 0; w < writers; w++ {
		node := fmt.Sprintf("n%d", w)
		want := NewDirectory()
		for i := 0; i < rounds; i++ {
			p := fmt.Sprintf("p%d", i%participants)
			switch i % 5 {
			case 0, 1, 2:
				want.Put(Entry{Participant: p, Node: node, Sessions: []string{"all", fmt.Sprintf("s%d", i%3)}, Online: i%2 == 0})
			case 3:
				want.Delete(node, p)
			case 4:
				if i%50 == 4 {
					want.DropNode(node)
				}
			}
		}
		assert.Equal(t, want.NodeEntries(node), d.NodeEntries(node), "node %s", node)
	}
}
