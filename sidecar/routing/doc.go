// Package routing is the core of a Switchyard node, callable without HTTP:
// given a validated event (package wire), it resolves the recipients across
// the cluster and hands the event over: to local mailboxes (package ws), to
// the peers that host the others, to external gateways.
//
// A Gateway is made by NewGateway from what it needs, given explicitly
// (Config): the node's hub and cluster view, and the two ways out, Peers
// (the node-to-node protocol, one typed method per message) and
// ExternalGateways. It knows no HTTP: package sidecar carries both over HTTP
// and calls the Gateway from its REST handlers and WebSocket frames.
//
// Files: gateway.go (Submit, Deliver, the constructor), router.go
// (resolve, dispatch, session membership across nodes), handoff.go (moving
// a participant between nodes: takeover, release, give back, a draining
// node's hand-off), externals.go (external participants and their circuit
// breaker), peers.go (the protocol), node.go (what the node's lifecycle
// and its hand-off endpoints ask of the core), testhooks.go (what sidecar's
// node tests look at).
package routing
