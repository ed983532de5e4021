// Package sidecar is a Switchyard node: the HTTP binding of the routing
// core (the REST API, the WebSocket attach, the node-to-node endpoints),
// authentication and rate limits, metrics, the session observers, the
// configuration, and the Node that owns the listener and shuts down in
// order.
//
// A Node owns everything one process serves: the HTTP listener, the hub of
// local participants (package ws), the cluster view (package membership)
// and the routing core (package routing), which it makes with
// routing.NewGateway and calls from its handlers: the REST submit and the
// WebSocket submit frame share it.
//
// The submit path: the body is vetted and decoded by wire.DecodeEvent
// (duplicate keys, invalid UTF-8, one object), validated against SPEC's
// field table, authorised against the request's credential (binding.go),
// and handed to the core, which gives it an event_id, encodes it once and
// appends it to each local recipient's mailbox. The core reaches other
// nodes only through its Peers interface; httpPeers (peerhttp.go) carries
// it over HTTP, each message with its own size limit.
//
// Files: api.go (REST), binding.go (decoding and authorising a submit,
// answering WebSocket frames), handoff_http.go (the hand-off's cluster
// endpoints), observe.go (read-only watchers), auth.go, ratelimit.go,
// metrics.go, config.go, peer.go and peerhttp.go (the HTTP client to
// peers and external gateways), node.go (the lifecycle).
//
// The event, the delivery body and the error model are package wire's:
// errors are *wire.Error values carrying status, code, detail and field,
// written by one function (wire.WriteError) in the error body shape of SPEC
// section 2.
package sidecar
