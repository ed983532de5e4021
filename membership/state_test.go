package membership

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func change(p string, v uint64, sessions ...string) versioned {
	return versioned{Participant: p, Version: v, Entry: &Entry{Type: "ai", Sessions: sessions, Online: true}}
}

func gone(p string, v uint64) versioned { return versioned{Participant: p, Version: v} }

func newPeer() *peerState { return &peerState{versions: map[string]uint64{}} }

func TestMergeAppliesNewerChangesOnly(t *testing.T) {
	dir := NewDirectory()
	ps := newPeer()
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("bob", 2, "s1")}})
	require.Len(t, dir.Session("s1"), 1)
	assert.Equal(t, "b", dir.Session("s1")[0].Node, "the sender owns the entry")

	// An older change (reordered on the wire) is ignored.
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("bob", 1, "s0")}})
	assert.Empty(t, dir.Session("s0"))
	assert.Len(t, dir.Session("s1"), 1)

	// A deletion wins, and a late older put cannot resurrect it.
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{gone("bob", 3)}})
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("bob", 2, "s1")}})
	assert.Empty(t, dir.Participant("bob"))
}

func TestMergeFullStateRemovesMissedDeletionsButKeepsNewer(t *testing.T) {
	dir := NewDirectory()
	ps := newPeer()
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{
		change("old", 1, "s"), change("kept", 2, "s"), change("newer", 9, "s")}})
	// The full state at counter 5 no longer has "old" (its deletion was
	// missed) and predates "newer" (version 9).
	ps.merge(dir, msgFullState, nodeMessage{Node: "b", Epoch: 1, Counter: 5, Changes: []versioned{change("kept", 2, "s")}})
	var names []string
	for _, e := range dir.Session("s") {
		names = append(names, e.Participant)
	}
	assert.Equal(t, []string{"kept", "newer"}, names)
	assert.Equal(t, uint64(5), ps.floor)

	// Anything at or below the floor is now stale.
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("old", 4, "s")}})
	assert.Empty(t, dir.Participant("old"))
}

func TestMergeNewEpochStartsAfresh(t *testing.T) {
	dir := NewDirectory()
	ps := newPeer()
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("bob", 50, "s")}})
	// The node restarted under the same name: its counter starts again.
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 2, Changes: []versioned{change("carol", 1, "s")}})
	var names []string
	for _, e := range dir.Session("s") {
		names = append(names, e.Participant)
	}
	assert.Equal(t, []string{"carol"}, names, "the previous life's entries are gone")
	// And a message from the previous life is ignored.
	ps.merge(dir, msgUpdates, nodeMessage{Node: "b", Epoch: 1, Changes: []versioned{change("zed", 99, "s")}})
	assert.Empty(t, dir.Participant("zed"))
}

func TestDecodeMessageRejectsGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":        nil,
		"one byte":     {msgUpdates},
		"unknown kind": append([]byte{'x'}, `{"n":"a"}`...),
		"not json":     append([]byte{msgUpdates}, "nope"...),
		"no node":      append([]byte{msgUpdates}, `{"ch":[]}`...),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := decodeMessage(data)
			assert.Error(t, err)
		})
	}
	kind, m, err := decodeMessage(encodeMessage(msgFullState, nodeMessage{Node: "a", Epoch: 7, Counter: 3}))
	require.NoError(t, err)
	assert.Equal(t, msgFullState, kind)
	assert.Equal(t, int64(7), m.Epoch)
}
