package routing

import (
	"context"
	"errors"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/ws"
)

// Peers is the node-to-node protocol as the routing core sees it: one
// method per message, typed both ways. The core (Gateway) reaches other
// nodes only through it; package sidecar carries it over HTTP with the
// cluster key (httpPeers), and its handlers of /v1/gateway/deliveries and
// /v1/gateway/cluster/* decode the same messages on the other side. Each
// message has its own size limits (the transport's: sidecar/peerhttp.go); a
// transport refuses an answer past its limit with ErrAnswerTooLarge, never
// truncates it.
//
// Nodes are named as membership names them; a transport that cannot reach
// a name (not a member) answers ErrNotMember.
type Peers interface {
	// Deliver hands an event to the recipients homed on node, hops being
	// the forwards so far (this one included).
	Deliver(ctx context.Context, node string, req PeerDelivery, hops int) (DeliverReply, error)
	// Release asks node to hand a participant over: its state, or the
	// status node refused with. The answer is bounded by the hand-off
	// limit (--max-handoff-bytes). A cut answer is asked for again.
	Release(ctx context.Context, node string, ref ParticipantRef) (ReleaseReply, error)
	// Confirm tells node the released state is installed here.
	Confirm(ctx context.Context, node string, ref ParticipantRef) error
	// Restore gives a participant back to node after a failed transfer.
	Restore(ctx context.Context, node string, req RestoreRequest) (int, error)
	// Takeover asks node to take a participant over from this (draining)
	// node: one attempt, bounded by ctx alone.
	Takeover(ctx context.Context, node string, ref ParticipantRef) (int, error)
	// Membership repeats a PUT or DELETE of a session participant on the
	// node that hosts it: the status, and the error it answered.
	Membership(ctx context.Context, node, method, id, session string, hops int) (MembershipReply, error)
	// PushDirectory and FetchDirectory carry the directory's messages
	// (membership encodes and signs them) to a peer's URL.
	PushDirectory(ctx context.Context, peerURL string, msg []byte, sig string) error
	FetchDirectory(ctx context.Context, peerURL string, body []byte) ([]byte, error)
}

// ExternalGateways carries deliveries to gateways outside the cluster: a
// delivery's body, shaped as the API reference shapes it, posted to the
// deliveries endpoint under a gateway's base URL; the answer is its status.
type ExternalGateways interface {
	Deliver(ctx context.Context, gatewayURL string, body []byte) (status int, err error)
}

// ErrAnswerTooLarge: the answer ran past the limit the caller allows. It is
// an error, never a truncated body, and asking again would not help.
var ErrAnswerTooLarge = errors.New("the answer is larger than the limit")

// ErrNotMember: the node named is not a member of the cluster (any more),
// so no transport can reach it.
var ErrNotMember = errors.New("not a member of the cluster")

// DeliverReply is a peer's answer to a delivery: its status, the result
// when it is 200, and the answer as received otherwise (for the log).
type DeliverReply struct {
	Status  int
	Result  DeliveryResult
	Refusal []byte
}

// ReleaseReply is a peer's answer to a release: the participant's state,
// or nil and the status it refused with (404 not there, 409 attached).
type ReleaseReply struct {
	Status int
	State  *ws.ParticipantState
}

// MembershipReply is a peer's answer to a forwarded PUT or DELETE of a
// session participant: its status, and the error it answered (nil when it
// answered 200 or no error body).
type MembershipReply struct {
	Status int
	Err    *wire.Error
}
