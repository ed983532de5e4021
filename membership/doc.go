// Package membership knows the cluster: which nodes there are and which node
// hosts each participant.
//
// memberlist finds the nodes and detects failures (gossip.go, events.go,
// delegates.go). The participant directory is partitioned over the live
// nodes: each record is kept by the few nodes that rank highest for its key
// by rendezvous hashing (ranking.go), Replicas of them (2 by default).
// There are two kinds of record: where a participant lives (key
// "p:<participant>": its home node, type, online flag, or the gateway URL
// of an external participant) and who is in a session (key "s:<session>":
// one record per member, with its home).
//
// A node is the only writer of its own participants' records (writer.go):
// a change is turned into the few records it touches and pushed, signed
// (sign.go), to their owners, one request per owner node; Sync waits for
// that, so a lookup from any node right after it finds the change. Readers
// ask the owners in parallel and take the union of their answers
// (lookup.go): while ownership moves (a node joins or leaves), one of a
// key's two owners still has its records. Homes re-register the records
// whose owners changed, check each owner with a digest now and then and
// re-send where it differs (anti-entropy), and owners drop the records of
// a node that left or died (records.go).
// memberlist's own gossip carries membership and node metadata only.
//
// Cluster is the seam the gateway core (package sidecar) routes through.
// Local is the one-node cluster used by a node that gossips with no one.
//
// Lock order: Gossip.mu, then records.mu. Nothing is sent over the network
// with either held.
package membership
