package membership

import (
	"hash/fnv"
	"slices"
)

// Each directory record is kept by the r nodes that rank highest for its
// key (rendezvous hashing): every node computes the same owners from the
// same member list, and a node joining or leaving changes the owners of
// only the keys it enters or leaves the top r of, about r/N of them.

// Keys of the two record kinds.
func participantKey(id string) string { return "p:" + id }
func sessionKey(id string) string     { return "s:" + id }

// owners returns the r nodes of nodes that rank highest for key, best
// first. nodes need not be sorted; ties (equal scores) go to the smaller
// name so that every node agrees.
func owners(key string, nodes []string, r int) []string {
	type ranked struct {
		node  string
		score uint64
	}
	top := make([]ranked, 0, r+1)
	for _, n := range nodes {
		s := Score(n, key)
		i := len(top)
		for i > 0 && (top[i-1].score < s || top[i-1].score == s && top[i-1].node > n) {
			i--
		}
		if i >= r {
			continue
		}
		top = slices.Insert(top, i, ranked{n, s})
		if len(top) > r {
			top = top[:r]
		}
	}
	out := make([]string, len(top))
	for i, t := range top {
		out[i] = t.node
	}
	return out
}

// Score is node's rendezvous score for key. The sidecar ranks the
// successors of a draining node's participants with it too.
func Score(node, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return mix(h.Sum64())
}

// mix is splitmix64's finalizer: FNV's high bits vary little between short
// keys that differ in their last bytes, and the ranking compares whole
// values.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
