package routing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/ws"
)

func TestSuccessorsAreStableAndSpread(t *testing.T) {
	peers := []string{"a", "b", "c"}
	assert.Equal(t, successors("bob", peers), successors("bob", []string{"c", "a", "b"}), "independent of order")
	firsts := map[string]int{}
	for i := range 300 {
		firsts[successors(fmt.Sprint("p", i), peers)[0]]++
	}
	for _, p := range peers {
		assert.Greater(t, firsts[p], 50, "every peer takes a share")
	}
}

// TestHeldStatesExpire: a held state is dropped when its time is up, and
// the expiry of a replaced one does not drop its replacement.
func TestHeldStatesExpire(t *testing.T) {
	h := heldStates{timers: tasks.New()}
	defer func() { require.NoError(t, h.timers.Close(context.Background())) }()
	h.hold(&ws.ParticipantState{ID: "bob"}, "node-2", time.Millisecond)
	require.Eventually(t, func() bool { return h.count() == 0 }, 10*time.Second, time.Millisecond)

	first := &ws.ParticipantState{ID: "carol"}
	h.hold(first, "node-2", time.Hour)
	second := &ws.ParticipantState{ID: "carol"}
	h.hold(second, "node-3", time.Hour)
	h.expire(first) // as the replaced timer would, had it fired
	assert.Nil(t, h.get("carol", "node-2"))
	assert.Same(t, second, h.get("carol", "node-3"))
	assert.Same(t, second, h.take("carol", "node-3"))
	assert.Zero(t, h.count())
}

// TestAPutBackLeavesANewerNoteAlone: a release noted where a participant
// went and is then refused; it puts back what was noted before, unless a
// newer note (a give-back's, which takes no release lock) replaced its own
// meanwhile.
func TestAPutBackLeavesANewerNoteAlone(t *testing.T) {
	var m movedTo
	now := time.Unix(1000, 0)

	prev, wrote := m.note("bob", "node-3", now)
	m.putBack("bob", prev, wrote)
	assert.Empty(t, m.lookup("bob", now), "nothing was noted before: forgotten")

	m.note("bob", "node-2", now)
	prev, wrote = m.note("bob", "node-3", now)
	m.putBack("bob", prev, wrote)
	assert.Equal(t, "node-2", m.lookup("bob", now), "what was noted before is back")

	prev, wrote = m.note("bob", "node-3", now)
	m.note("bob", "node-1", now.Add(time.Millisecond)) // a give-back meanwhile
	m.putBack("bob", prev, wrote)
	assert.Equal(t, "node-1", m.lookup("bob", now), "the newer note stays")
}
