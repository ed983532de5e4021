// Package membership knows the cluster: which nodes there are and which node
// hosts each participant.
//
// The Directory is the replicated participant directory. Each node writes
// only its own entries (participant → sessions, online state, or the gateway
// URL of an external participant); the cluster layer copies other nodes'
// entries in and drops all of a node's entries when it leaves or dies.
//
// Cluster is the seam the gateway core (package sidecar) routes through.
// Local is the one-node cluster used by a node that gossips with no one; the
// memberlist-backed cluster plugs in behind the same interface.
package membership
