// Package wire is what a Switchyard node reads and writes at its edges, with
// no routing in it: the event (SPEC section 2's GatewayEvent) and its
// validation, the delivery body one gateway posts to another, and the
// error model (Error, rendered as SPEC section 2's error body).
//
// Bodies are vetted by one strict checker (jsoncheck.go: duplicate keys,
// invalid UTF-8, lone surrogates, extreme nesting, anything but one
// object), which the hot decoders (DecodeEvent, DecodeDelivery) run in the
// same pass as they decode; FuzzEventDecoding and FuzzDeliveryDecoding hold
// them to CheckJSON followed by encoding/json.
//
// It sits below both the routing core and the HTTP binding (package
// sidecar), so that both speak one model without depending on each other.
package wire
