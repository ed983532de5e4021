package ws

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// writerIdle reports whether c has no writer goroutine.
func writerIdle(c *conn) bool {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return !c.writerRunning
}

func onlyConn(t *testing.T, p *Participant) *conn {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Len(t, p.conns, 1)
	return p.conns[0]
}

// With a coalescing window, events that arrive while a woken writer waits
// leave together: one WebSocket message for a batch=1 client.
func TestCoalesceWindowJoinsEventsArrivingWithinIt(t *testing.T) {
	// The window is far longer than three Deliver calls take.
	th := newTestHub(t, Config{CoalesceWindow: 500 * time.Millisecond})
	cl, _ := th.attach("bob", url.Values{"batch": {"1"}})
	c := onlyConn(t, th.participant("bob"))
	require.Eventually(t, func() bool { return writerIdle(c) }, 5*time.Second, time.Millisecond,
		"the writer exits once the welcome is written")

	now := time.Now()
	th.deliver("bob", testEvent(1, now), testEvent(2, now), testEvent(3, now))
	msg, err := cl.readMessage()
	require.NoError(t, err)
	require.Equal(t, 3, len(bytes.Split(msg, []byte("\n"))), "one message carries all three: %s", msg)
}

// Control frames do not wait for the window: with an hour-long one, the
// welcome and a join's result still arrive (attach and next would time out).
func TestCoalesceWindowDoesNotDelayControlFrames(t *testing.T) {
	th := newTestHub(t, Config{CoalesceWindow: time.Hour})
	cl, _ := th.attach("bob", nil)
	cl.send(map[string]any{"type": "join", "id": "j1", "session_id": "s2"})
	res := cl.next()
	require.Equal(t, "result", res.Type, "%s", res.Raw)
	require.Equal(t, "j1", res.ID)
}

// A connection that was quiet for longer than busyWindows windows gets a new
// event at once, however long the window: only a stream waits.
func TestCoalesceWindowSkippedForAnEventAfterQuiet(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	th := newTestHub(t, Config{CoalesceWindow: time.Hour, Now: now})
	cl, _ := th.attach("bob", nil)
	c := onlyConn(t, th.participant("bob"))
	require.Eventually(t, func() bool { return writerIdle(c) }, 5*time.Second, time.Millisecond)

	clock.Add(int64(busyWindows*time.Hour + time.Second)) // quiet since the welcome
	th.deliver("bob", testEvent(1, now()))
	cl.nextEvent(1) // read within the client's 10 s timeout: the hour was not waited
}

// A released batch keeps no event or frame alive: collect truncates its
// slices, so reset must clear what they held beyond their length.
func TestReleasedBatchHoldsNoReferences(t *testing.T) {
	b := &batch{}
	ev := testEvent(1, time.Now())
	b.ctrl = append(b.ctrl, []byte(`{"type":"welcome"}`))
	b.events = append(b.events, entry{seq: 1, ev: ev}, entry{seq: 2, ev: ev})
	b.ctrl, b.events = b.ctrl[:0], b.events[:0] // as collect leaves them
	b.reset()
	for _, f := range b.ctrl[:cap(b.ctrl)] {
		require.Nil(t, f)
	}
	for _, e := range b.events[:cap(b.events)] {
		require.Nil(t, e.ev)
	}
}

// A drain does not wait for its deadline on a client that stopped reading:
// the sweeper keeps cutting writes older than WriteTimeout until the
// connections are gone.
func TestShutdownCutsAWriteStuckOnAClientThatStopsReading(t *testing.T) {
	th := newTestHub(t, Config{WriteTimeout: 200 * time.Millisecond, SweepInterval: 20 * time.Millisecond,
		WriteQueueBytes: 64 << 20, MailboxSize: 4096},
		func(th *testHub) { th.serverSndBuf = 32 << 10 })
	th.attachWith(testkit.SmallBufferClient(t, 4096), "alice", nil) // and never read again
	c := onlyConn(t, th.participant("alice"))
	pad := strings.Repeat("z", 2048)
	for i := 1; i <= 500; i++ {
		th.deliver("alice", bodyEvent(fmt.Sprintf("e%d", i), "s1", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)))
	}
	require.Eventually(t, func() bool { return c.writingSince.Load() != 0 }, 5*time.Second, time.Millisecond,
		"the writer is stuck in a write")

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	require.NoError(t, th.hub.Shutdown(ctx), "the stuck write was cut, not waited out until the deadline")
}
