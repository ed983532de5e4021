package ws

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Keepalive: a client that vanished without closing its TCP connection (a
// crashed host, a dropped NAT entry, a pulled cable) leaves a half-open
// connection whose reads never end and whose writes may succeed for a long
// time, each into the kernel's buffer. It would hold its connection slot
// (node-wide, per participant and per credential) until a write failed:
// forever if nothing is sent to it. So the hub's sweeper pings every
// connection it has not heard from for PingInterval, and cuts one that has
// not answered within PingTimeout of the ping; the reader's exit then gives
// the slot back.
//
// No goroutine or timer is added per connection: the sweeper, which
// already visits every connection for write deadlines, decides; the ping
// frame goes out through the connection's writer (requestPing); and the
// reader, always in a read, hears the answer. Any frame from the client
// counts as an answer, so a client that talks is not pinged at all.
//
// The keepalive reads the real clock, not Config.Now: tests move the hub's
// clock to expire mailboxes, and such a jump must not look like silence.

// keepalive is what the sweeper knows of a connection's liveness; both are
// UnixNano on the real clock.
type keepalive struct {
	heardAt atomic.Int64 // when the client last sent a frame (data, ping or pong)
	pingAt  atomic.Int64 // when the sweeper last asked for a ping; 0: never
	cut     atomic.Bool  // the sweeper closed the socket: nothing more to decide
}

// heard records a frame from the client.
func (k *keepalive) heard() { k.heardAt.Store(time.Now().UnixNano()) }

// keepaliveCall is what the sweeper does about one connection.
type keepaliveCall int

const (
	keepaliveNothing keepaliveCall = iota
	keepalivePing                  // quiet for the interval: ping it
	keepaliveCut                   // a ping went unanswered for the timeout
)

// due says what a connection needs at now, given the interval and timeout.
func (k *keepalive) due(now int64, interval, timeout time.Duration) keepaliveCall {
	if k.cut.Load() {
		return keepaliveNothing // the reader is on its way out
	}
	heard, pinged := k.heardAt.Load(), k.pingAt.Load()
	if pinged > heard { // a ping is out, unanswered
		if now-pinged >= int64(timeout) {
			return keepaliveCut
		}
		return keepaliveNothing
	}
	if now-heard >= int64(interval) {
		return keepalivePing
	}
	return keepaliveNothing
}

// listening returns opts with callbacks that note the client's pings and
// pongs (coder/websocket answers and consumes them inside Read, so the
// read loop never sees them), calling the caller's own callbacks too.
func (k *keepalive) listening(opts *websocket.AcceptOptions) *websocket.AcceptOptions {
	var o websocket.AcceptOptions
	if opts != nil {
		o = *opts
	}
	onPing, onPong := o.OnPingReceived, o.OnPongReceived
	o.OnPingReceived = func(ctx context.Context, payload []byte) bool {
		k.heard()
		return onPing == nil || onPing(ctx, payload)
	}
	o.OnPongReceived = func(ctx context.Context, payload []byte) {
		k.heard()
		if onPong != nil {
			onPong(ctx, payload)
		}
	}
	return &o
}

// keepConnectionsAlive pings the connections that have been quiet for
// PingInterval and cuts those that left a ping unanswered for PingTimeout.
// It runs on the sweeper; like cutStuckWrites it decides under connMu and
// acts after releasing it (requestPing takes a participant's lock, which
// comes before connMu).
func (h *Hub) keepConnectionsAlive() {
	now := time.Now().UnixNano()
	var ping, cut []*conn
	h.connMu.Lock()
	for c := range h.conns {
		switch c.due(now, h.cfg.PingInterval, h.cfg.PingTimeout) {
		case keepalivePing:
			ping = append(ping, c)
		case keepaliveCut:
			cut = append(cut, c)
		}
	}
	h.connMu.Unlock()
	for _, c := range ping {
		c.pingAt.Store(now)
		c.requestPing()
	}
	for _, c := range cut {
		if !c.cut.CompareAndSwap(false, true) {
			continue
		}
		h.log.Debug("ping not answered, dropping connection", "participant", c.p.id)
		h.cfg.Metrics.PingTimeouts.Inc()
		_ = c.ws.CloseNow() // the reader ends, and gives the slot back
	}
}
