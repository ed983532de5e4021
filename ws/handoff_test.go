package ws

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func handoffEvent(i int) *Event {
	body := json.RawMessage(fmt.Sprintf(`{"message":"%d"}`, i))
	return NewEvent(fmt.Sprint("e", i), "s1", body, time.Now()).WithSender("alice")
}

// TestGiveBackAndRestoreKeepEachEventOnce: bob's old home exports him with
// events 1-3; the would-be new home buffers 3 (sent to both) and 4, then
// gives him back; the old home restores him with 1-4, each once, seqs
// continuing, and the new home no longer has him.
func TestGiveBackAndRestoreKeepEachEventOnce(t *testing.T) {
	oldHome, newHome := newTestHub(t, Config{}), newTestHub(t, Config{})
	require.NoError(t, oldHome.hub.Join("bob", "ai", "s1"))
	oldHome.deliver("bob", handoffEvent(1), handoffEvent(2), handoffEvent(3))

	p, created := newHome.hub.Prepare("bob", "ai", []string{"s1"})
	require.True(t, created)
	st, res := oldHome.hub.Export("bob")
	require.Equal(t, Exported, res)
	require.Nil(t, oldHome.hub.Lookup("bob"))
	for _, i := range []int{3, 4} {
		assert.Equal(t, Queued, newHome.hub.Deliver(p, handoffEvent(i)))
	}
	extra := newHome.hub.GiveBack(p)
	require.Len(t, extra, 2)
	assert.Nil(t, newHome.hub.Lookup("bob"), "given back")
	assert.True(t, newHome.listener.heardGone("bob"))

	require.True(t, oldHome.hub.Restore("bob", &st, extra))
	back := oldHome.participant("bob")
	oldest, newest, n := boxState(back)
	assert.Equal(t, [3]uint64{1, 4, 4}, [3]uint64{oldest, newest, uint64(n)}, "events 1-4, 3 once")
	assert.True(t, back.InSession("s1"))
	assert.Equal(t, Duplicate, oldHome.hub.Deliver(back, handoffEvent(4)), "its dedupe keys came back too")

	assert.False(t, newHome.hub.Restore("carol", nil, extra), "nothing to restore into")
}

// TestFullTakeoverBufferKeepsTheNewestEvents: deliveries buffered during a
// takeover are bounded by the mailbox size; past it the oldest buffered
// event goes, as it would from the mailbox, never the newest (which the
// sender was told is queued).
func TestFullTakeoverBufferKeepsTheNewestEvents(t *testing.T) {
	h := newTestHub(t, Config{MailboxSize: 4})
	p, created := h.hub.Prepare("bob", "ai", []string{"s1"})
	require.True(t, created)
	for i := 1; i <= 7; i++ {
		require.Equal(t, Queued, h.hub.Deliver(p, handoffEvent(i)))
	}
	h.hub.Install(p, nil)
	var got []string
	p.mu.Lock()
	for seq := p.box.oldest(); p.box.n > 0 && seq <= p.box.newest(); seq++ {
		got = append(got, p.box.at(seq).ev.ID)
	}
	p.mu.Unlock()
	assert.Equal(t, []string{"e4", "e5", "e6", "e7"}, got, "the newest four, in order")
	assert.Equal(t, Duplicate, h.hub.Deliver(p, handoffEvent(7)), "the newest was taken")
}

// TestGiveBackReturnsTheBufferedBytes: the deliveries a prepared
// participant buffered are counted against the byte budget; giving the
// participant back hands them to the old home as state, so the count
// returns to zero here, as after an Abandon or an Install.
func TestGiveBackReturnsTheBufferedBytes(t *testing.T) {
	th, clock := budgetHub(t, Config{})
	p, created := th.hub.Prepare("bob", "ai", []string{"s"})
	require.True(t, created)
	for i := range 3 {
		require.Equal(t, Queued, th.hub.Deliver(p, budgetEvent(fmt.Sprint("e", i), 1000, clock.Now())))
	}
	require.Positive(t, heldBytes(t, th.hub))
	require.Len(t, th.hub.GiveBack(p), 3)
	require.Zero(t, heldBytes(t, th.hub), "nothing is held once bob is given back")
}
