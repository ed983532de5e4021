package membership

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("node-", i)
	}
	return out
}

func TestOwnersAreDistinctStableAndOrderFree(t *testing.T) {
	nodes := nodeNames(10)
	reversed := slices.Clone(nodes)
	slices.Reverse(reversed)
	for i := range 1000 {
		key := fmt.Sprint("s:", i)
		got := owners(key, nodes, 2)
		require.Len(t, got, 2)
		assert.NotEqual(t, got[0], got[1])
		assert.Equal(t, got, owners(key, reversed, 2), "the order of the member list does not matter")
	}
	assert.Equal(t, []string{"only"}, owners("p:x", []string{"only"}, 2), "fewer nodes than replicas: all of them")
	assert.Empty(t, owners("p:x", nil, 2))
}

// TestOwnersMoveAboutRPerNOfTheKeys: when an eleventh node joins ten,
// a key's owners change only when the newcomer enters its top two (about
// 2/11 of the keys, nothing moving between the old nodes); when a node
// leaves, only the keys it owned move.
func TestOwnersMoveAboutRPerNOfTheKeys(t *testing.T) {
	const keys, r = 20000, 2
	before := nodeNames(10)
	after := append(slices.Clone(before), "newcomer")
	moved := 0
	for i := range keys {
		key := fmt.Sprint("s:session-", i)
		old, cur := owners(key, before, r), owners(key, after, r)
		if slices.Equal(old, cur) {
			continue
		}
		moved++
		require.Contains(t, cur, "newcomer", "a key moved between old nodes: %v → %v", old, cur)
	}
	share := float64(moved) / keys
	assert.InDelta(t, float64(r)/11, share, 0.02, "share of keys whose owners changed")

	without := slices.Delete(slices.Clone(before), 3, 4) // node-3 leaves
	for i := range keys {
		key := fmt.Sprint("p:participant-", i)
		old, cur := owners(key, before, r), owners(key, without, r)
		if !slices.Contains(old, "node-3") {
			assert.Equal(t, old, cur, "a key node-3 did not own kept its owners")
		}
	}
}

func TestOwnersSpreadEvenly(t *testing.T) {
	nodes := nodeNames(5)
	count := map[string]int{}
	for i := range 10000 {
		for _, n := range owners(fmt.Sprint("p:", i), nodes, 2) {
			count[n]++
		}
	}
	for _, n := range nodes {
		assert.InDelta(t, 4000, count[n], 400, "%s's share", n)
	}
}
