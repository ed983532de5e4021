// Package sidecar is the gateway core of a Switchyard node: the event model
// and its validation, recipient resolution, and the REST API.
//
// A Node owns everything one process serves: the HTTP listener, the hub of
// local participants (package ws) and the cluster view (package membership).
// The Gateway is the core logic, callable without HTTP: the REST submit and
// the WebSocket submit frame share it.
//
// The submit path: the body is vetted and decoded by wire.DecodeEvent
// (duplicate keys, invalid UTF-8, one object), validated against SPEC's
// field table, given an event_id, encoded once, and appended to each local
// recipient's mailbox.
// Other nodes are reached only through the Peers interface (peers.go),
// one typed method per node-to-node message, each with its own size limit;
// httpPeers (peerhttp.go) carries it over HTTP.
//
// Files keep the core apart from the bindings, a step towards the core's
// own package (issue 15): gateway.go, router.go, handoff.go and
// externals.go are the core; api.go (REST), binding.go (decoding and
// authorising a submit, answering WebSocket frames), handoff_http.go (the
// hand-off's cluster endpoints) and observe.go are the bindings.
//
// The event, the delivery body and the error model are package wire's:
// errors are *wire.Error values carrying status, code, detail and field,
// written by one function (wire.WriteError) in the error body shape of SPEC
// section 2.
package sidecar
