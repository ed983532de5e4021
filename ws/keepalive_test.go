package ws

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/rawws"
)

func TestKeepaliveDue(t *testing.T) {
	const interval, timeout = 30 * time.Second, 10 * time.Second
	at := func(d time.Duration) int64 { return int64(time.Hour + d) } // away from 0, which means "never pinged"
	for _, tc := range []struct {
		name          string
		heard, pinged int64
		cut           bool
		now           int64
		want          keepaliveCall
	}{
		{"heard within the interval", at(0), 0, false, at(interval - 1), keepaliveNothing},
		{"quiet for the interval", at(0), 0, false, at(interval), keepalivePing},
		{"ping out, within the timeout", at(0), at(interval), false, at(interval + timeout - 1), keepaliveNothing},
		{"ping out, past the timeout", at(0), at(interval), false, at(interval + timeout), keepaliveCut},
		{"ping answered, quiet since for less than the interval", at(interval + 1), at(interval), false, at(2 * interval), keepaliveNothing},
		{"ping answered, quiet since for the interval", at(interval + 1), at(interval), false, at(2*interval + 1), keepalivePing},
		{"already cut", at(0), at(interval), true, at(interval + timeout), keepaliveNothing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k keepalive
			k.heardAt.Store(tc.heard)
			k.pingAt.Store(tc.pinged)
			k.cut.Store(tc.cut)
			assert.Equal(t, tc.want, k.due(tc.now, interval, timeout))
		})
	}
}

// A client that completed the upgrade and then went silent (no pong, no
// frame: a half-open connection whose peer vanished) is cut after its ping
// goes unanswered, and its slots come back: a new connection past the
// node-wide and per-participant caps is admitted.
func TestSilentConnectionIsCutAndItsSlotFreed(t *testing.T) {
	th := newTestHub(t, Config{MaxConnectionsPerParticipant: 1, PingInterval: 20 * time.Millisecond,
		PingTimeout: 100 * time.Millisecond, SweepInterval: 5 * time.Millisecond},
		func(th *testHub) { th.maxConns = 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	silent, err := rawws.Dial(ctx, &net.Dialer{}, th.wsURL(url.Values{"participant_id": {"alice"}}), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	// It never reads again: the ping stays in its socket buffer, unanswered.

	require.Eventually(t, func() bool {
		c, _, err := th.dial(url.Values{"participant_id": {"alice"}})
		if err != nil { // (assert, not require: this runs in Eventually's goroutine)
			assert.Error(t, <-th.attachErrs, "refused while the silent connection holds the slot")
			return false
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		return true
	}, 10*time.Second, 5*time.Millisecond, "the silent connection's slot is never freed")
	assert.Equal(t, 1.0, counterValue(t, th.hub.cfg.Metrics.PingTimeouts), "counted once")
}

// A client that reads answers the pings (its WebSocket library sends the
// pongs): it is pinged again and again and never cut, though it sends no
// frame of its own.
func TestAnsweringConnectionIsKeptAlive(t *testing.T) {
	th := newTestHub(t, Config{PingInterval: 10 * time.Millisecond, PingTimeout: 10 * time.Second,
		SweepInterval: 5 * time.Millisecond})
	cl, _ := th.attach("bob", nil)
	readDone := make(chan struct{})
	go func() { // reads (and so answers pings) until the test closes the client
		defer close(readDone)
		for {
			if _, _, err := cl.conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { _ = cl.conn.CloseNow(); <-readDone })

	c := onlyConn(t, th.participant("bob"))
	var last int64
	for round := range 3 {
		require.Eventually(t, func() bool {
			pinged := c.pingAt.Load()
			return pinged > last && c.heardAt.Load() >= pinged
		}, 10*time.Second, time.Millisecond, "ping %d was not answered", round+1)
		last = c.pingAt.Load()
	}
	assert.Zero(t, counterValue(t, th.hub.cfg.Metrics.PingTimeouts))
	assert.True(t, th.participant("bob").Info().Online, "still attached")
}
