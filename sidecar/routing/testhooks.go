package routing

import (
	"time"

	"github.com/switchyard-gw/switchyard/ws"
)

// For the tests of package sidecar, which start whole nodes and look
// inside their core: the hand-off's held states, its clock, its peers.

// HeldCount is the number of states held for peers.
func (g *Gateway) HeldCount() int { return g.held.count() }

// Hold keeps st as released to node to, for ttl, as a release does.
func (g *Gateway) Hold(st *ws.ParticipantState, to string, ttl time.Duration) {
	g.held.hold(st, to, ttl)
}

// HeldExpiryArmed reports whether the state held for id has an expiry
// timer (none when the node was stopping as it was held).
func (g *Gateway) HeldExpiryArmed(id string) bool {
	g.held.mu.Lock()
	defer g.held.mu.Unlock()
	return g.held.entries[id].expiry != nil
}

// OnExported has fn called between a release's export and its hold.
func (g *Gateway) OnExported(fn func(id string)) { g.held.exported.Store(&fn) }

// ReleasingUsers counts the holders and waiters of id's release lock.
func (g *Gateway) ReleasingUsers(id string) int { return g.held.releasing.users(id) }

// Peers is the node-to-node transport the core was given.
func (g *Gateway) Peers() Peers { return g.peers }

// SetClock replaces the core's clock (time.Now); set it before the node
// serves.
func (g *Gateway) SetClock(now func() time.Time) { g.now = now }
