package ws

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// budgetHub is a hub whose clock the test moves and whose sweeper never
// runs by itself: the test sweeps when it means to.
func budgetHub(t *testing.T, cfg Config) (*testHub, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	cfg.Now = clock.Now
	cfg.SweepInterval = time.Hour
	return newTestHub(t, cfg), clock
}

// budgetEvent is an event with a body of about size bytes, accepted now.
func budgetEvent(id string, size int, now time.Time) *Event {
	return NewEvent(id, "s", []byte(`"`+strings.Repeat("x", size)+`"`), now)
}

// heldBytes is the hub's count, checked against its gauge.
func heldBytes(t *testing.T, h *Hub) int64 {
	t.Helper()
	n := h.MailboxBytes()
	require.Equal(t, float64(n), counterValue(t, h.cfg.Metrics.MailboxBytes), "the gauge reads the count")
	return n
}

func joinAll(t *testing.T, h *Hub, ids ...string) {
	t.Helper()
	for _, id := range ids {
		require.NoError(t, h.Join(id, "ai", "s"))
	}
}

func TestMailboxBytesCountASharedEventOnce(t *testing.T) {
	th, clock := budgetHub(t, Config{})
	joinAll(t, th.hub, "a", "b", "c")
	require.Zero(t, heldBytes(t, th.hub))

	ev := budgetEvent("e1", 10_000, clock.Now())
	th.deliver("a", ev)
	th.deliver("b", ev)
	th.deliver("c", ev)
	// One copy of the event, and each mailbox's first ring of 4 slots.
	require.Equal(t, ev.cost()+3*4*slotBytes, heldBytes(t, th.hub))

	ev2 := budgetEvent("e2", 500, clock.Now())
	th.deliver("a", ev2)
	require.Equal(t, ev.cost()+ev2.cost()+3*4*slotBytes, heldBytes(t, th.hub))
}

func TestMailboxBytesEviction(t *testing.T) {
	th, clock := budgetHub(t, Config{MailboxSize: 4})
	joinAll(t, th.hub, "a")
	var evs []*Event
	for i := range 10 {
		ev := budgetEvent(fmt.Sprint("e", i), 1000+i, clock.Now())
		evs = append(evs, ev)
		th.deliver("a", ev)
	}
	want := 4 * slotBytes // the ring stops at MailboxSize
	for _, ev := range evs[6:] {
		want += ev.cost() // only the 4 newest are held
	}
	require.Equal(t, want, heldBytes(t, th.hub))
}

func TestMailboxBytesAckTrim(t *testing.T) {
	th, clock := budgetHub(t, Config{})
	joinAll(t, th.hub, "a", "b")
	shared := budgetEvent("shared", 5000, clock.Now())
	th.deliver("a", shared)
	th.deliver("b", shared)
	own := budgetEvent("own", 700, clock.Now())
	th.deliver("a", own)
	rings := 2 * 4 * slotBytes

	th.hub.ack(th.participant("a"), 2)
	require.Equal(t, shared.cost()+rings, heldBytes(t, th.hub), "b still holds the shared event")
	th.hub.ack(th.participant("b"), 1)
	require.Equal(t, rings, heldBytes(t, th.hub), "the last holder let go")

	th.hub.sweep(clock.Now()) // empty mailboxes give their rings back
	require.Zero(t, heldBytes(t, th.hub))
}

func TestMailboxBytesExpiry(t *testing.T) {
	th, clock := budgetHub(t, Config{MailboxTTL: time.Minute, OfflineTTL: time.Hour})
	joinAll(t, th.hub, "a", "b")
	for i := range 3 {
		ev := budgetEvent(fmt.Sprint("e", i), 2000, clock.Now())
		th.deliver("a", ev)
		th.deliver("b", ev)
	}
	require.NotZero(t, heldBytes(t, th.hub))
	clock.Add(time.Minute + time.Second)
	th.hub.sweep(clock.Now())
	require.NotNil(t, th.hub.Lookup("a"), "the participants stay; their events expired")
	require.Zero(t, heldBytes(t, th.hub))
}

func TestMailboxBytesOfflineRemoval(t *testing.T) {
	th, clock := budgetHub(t, Config{MailboxTTL: time.Hour, OfflineTTL: time.Minute})
	joinAll(t, th.hub, "a", "b")
	ev := budgetEvent("e", 2000, clock.Now())
	th.deliver("a", ev)
	th.deliver("b", ev)
	clock.Add(time.Minute + time.Second)
	th.hub.sweep(clock.Now())
	require.Nil(t, th.hub.Lookup("a"))
	require.Zero(t, heldBytes(t, th.hub))
}

func TestMailboxBytesExportAndInstall(t *testing.T) {
	from, clock := budgetHub(t, Config{})
	to, _ := budgetHub(t, Config{})
	joinAll(t, from.hub, "a")
	for i := range 3 {
		from.deliver("a", budgetEvent(fmt.Sprint("e", i), 3000, clock.Now()))
	}
	require.NotZero(t, heldBytes(t, from.hub))

	p, created := to.hub.Prepare("a", "ai", []string{"s"})
	require.True(t, created)
	buffered := budgetEvent("during", 4000, clock.Now())
	require.Equal(t, Queued, to.hub.Deliver(p, buffered))
	require.Equal(t, buffered.cost(), heldBytes(t, to.hub), "a buffered delivery is held")

	st, res := from.hub.Export("a")
	require.Equal(t, Exported, res)
	require.Zero(t, heldBytes(t, from.hub), "the old home let go of everything")

	to.hub.Install(p, &st)
	_, _, n := boxState(p)
	require.Equal(t, 4, n)
	want := buffered.cost() + 4*slotBytes
	p.mu.Lock()
	for seq := p.box.oldest(); seq <= p.box.newest(); seq++ {
		if ev := p.box.at(seq).ev; ev != buffered {
			want += ev.cost()
		}
	}
	p.mu.Unlock()
	require.Equal(t, want, heldBytes(t, to.hub), "installed events and the buffered one, each once")

	_, res = to.hub.Export("a")
	require.Equal(t, Exported, res)
	require.Zero(t, heldBytes(t, to.hub))
}

func TestMailboxBytesAbandon(t *testing.T) {
	th, clock := budgetHub(t, Config{})
	p, created := th.hub.Prepare("a", "ai", []string{"s"})
	require.True(t, created)
	require.Equal(t, Queued, th.hub.Deliver(p, budgetEvent("e", 3000, clock.Now())))
	require.NotZero(t, heldBytes(t, th.hub))
	th.hub.Abandon(p)
	require.Zero(t, heldBytes(t, th.hub))
}

func TestReserveRefusesPastTheBudget(t *testing.T) {
	th, clock := budgetHub(t, Config{MaxMailboxBytes: 20_000})
	joinAll(t, th.hub, "a", "b")
	refusals := func() float64 { return counterValue(t, th.hub.cfg.Metrics.BudgetRefusals) }
	require.Equal(t, float64(20_000), counterValue(t, th.hub.cfg.Metrics.MailboxBytesLimit))

	accepted, refused := 0, false
	for i := 0; i < 100 && !refused; i++ {
		ev := budgetEvent(fmt.Sprint("e", i), 4000, clock.Now())
		before := heldBytes(t, th.hub)
		if refused = !th.hub.Reserve(ev); refused {
			require.Equal(t, before, heldBytes(t, th.hub), "a refusal changes nothing")
			require.Greater(t, before+ev.cost(), int64(20_000))
			break
		}
		th.deliver("a", ev)
		th.deliver("b", ev)
		th.hub.Release(ev)
		accepted++
	}
	require.True(t, refused, "the budget was never reached")
	require.Equal(t, 4, accepted, "4 events of about 4 KB and two rings fit in 20,000 bytes")
	require.Equal(t, float64(1), refusals())
	require.LessOrEqual(t, heldBytes(t, th.hub), int64(20_000))

	// A reservation nobody took (every recipient a duplicate) is given back.
	th.hub.ack(th.participant("a"), 4)
	th.hub.ack(th.participant("b"), 4)
	rings := heldBytes(t, th.hub)
	ev := budgetEvent("later", 4000, clock.Now())
	require.True(t, th.hub.Reserve(ev), "room again once the events were acknowledged")
	require.Equal(t, rings+ev.cost(), heldBytes(t, th.hub))
	th.hub.Release(ev)
	require.Equal(t, rings, heldBytes(t, th.hub))
}

// TestMailboxBytesUnderConcurrency delivers shared events to many mailboxes
// while they are acknowledged and swept; once everything is dropped the
// count is back to zero.
func TestMailboxBytesUnderConcurrency(t *testing.T) {
	th, clock := budgetHub(t, Config{MailboxSize: 16})
	ids := []string{"a", "b", "c", "d", "e", "f"}
	joinAll(t, th.hub, ids...)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ev := budgetEvent(fmt.Sprint(w, "-", i), 100+i, clock.Now())
				if !th.hub.Reserve(ev) {
					t.Error("refused under the default budget")
					return
				}
				for _, id := range ids {
					th.hub.Deliver(th.hub.Lookup(id), ev)
				}
				th.hub.Release(ev)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 300 {
			p := th.hub.Lookup(ids[i%len(ids)])
			p.mu.Lock()
			newest := p.box.newest()
			p.mu.Unlock()
			th.hub.ack(p, newest)
			th.hub.sweep(clock.Now())
		}
	}()
	wg.Wait()
	require.Equal(t, bytesInMailboxes(th.hub, ids), heldBytes(t, th.hub), "the count matches what the mailboxes hold")
	clock.Add(10 * time.Minute) // past the mailbox TTL and the offline TTL
	th.hub.sweep(clock.Now())
	require.Zero(t, th.hub.Count())
	require.Zero(t, heldBytes(t, th.hub))
}

// bytesInMailboxes adds up what the mailboxes of ids hold: each distinct
// event once, and every ring slot.
func bytesInMailboxes(h *Hub, ids []string) int64 {
	events := map[*Event]bool{}
	var n int64
	for _, id := range ids {
		p := h.Lookup(id)
		p.mu.Lock()
		n += int64(len(p.box.ring)) * slotBytes
		for i := range p.box.n {
			events[p.box.ring[(p.box.head+i)%len(p.box.ring)].ev] = true
		}
		p.mu.Unlock()
	}
	for ev := range events {
		n += ev.cost()
	}
	return n
}
