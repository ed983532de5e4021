package routing

import "github.com/switchyard-gw/switchyard/internal/wire"

// What the node (package sidecar) asks of its core beyond routing: its
// settings, and the steps of its lifecycle and of the hand-off's cluster
// endpoints, whose decoding is the binding's.

// Limits are the size rules events are validated against.
func (g *Gateway) Limits() wire.Limits { return g.limits }

// StateLimit is the largest participant state a hand-off carries
// (--max-handoff-bytes).
func (g *Gateway) StateLimit() int64 { return g.stateLimit }

// ExternalCount is the number of external participants registered here.
func (g *Gateway) ExternalCount() int { return g.externals.count() }

// StartDraining makes the core refuse submits from now on: the node is
// shutting down (its directory stops being kept up to date once it
// leaves).
func (g *Gateway) StartDraining() { g.closed.Store(true) }

// DropHeld forgets every state held for a peer: the node stops, so no
// confirm or restore can come any more.
func (g *Gateway) DropHeld() { g.held.clear() }

// Confirmed is a new home's confirm that it installed participant id,
// released to it: the state held for it is dropped.
func (g *Gateway) Confirmed(id, newHome string) { g.held.take(id, newHome) }

// RestoreHere takes back a participant this node released, after its
// transfer failed: the state held for it (if any) with the deliveries
// the other node buffered meanwhile. restored is false when this node holds
// nothing of the participant; held says whether it had kept its state.
func (g *Gateway) RestoreHere(req RestoreRequest) (restored, held bool) {
	unlock := g.held.releasing.lock(req.ParticipantID)
	st := g.held.take(req.ParticipantID, req.From)
	restored = g.hub.Restore(req.ParticipantID, st, req.Events)
	unlock()
	if !restored {
		return false, st != nil
	}
	g.moved.forget(req.ParticipantID)
	return true, st != nil
}
