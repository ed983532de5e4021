package ws

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDedupeIndexRemembersWithinWindowAndBound(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := dedupeIndex{max: 3}
	assert.False(t, d.seenOrAdd(1, t0, time.Minute))
	assert.True(t, d.seenOrAdd(1, t0.Add(time.Second), time.Minute), "a retry within the window")
	assert.False(t, d.seenOrAdd(1, t0.Add(2*time.Minute), time.Minute), "past the window it is new again")

	// The bound drops the oldest keys first.
	d = dedupeIndex{max: 3}
	for k := uint64(1); k <= 4; k++ {
		assert.False(t, d.seenOrAdd(k, t0, time.Hour))
	}
	assert.False(t, d.seenOrAdd(1, t0, time.Hour), "key 1 was pushed out by key 4")
	assert.True(t, d.seenOrAdd(4, t0, time.Hour))
	assert.LessOrEqual(t, len(d.seen), 3)

	// Expiry forgets old keys and frees the memory when empty.
	d.expire(t0.Add(time.Second))
	assert.Nil(t, d.seen)
	assert.Nil(t, d.ring)
	assert.False(t, d.seenOrAdd(4, t0.Add(2*time.Second), time.Hour))
}

func TestDedupeKeyDependsOnSenderAndID(t *testing.T) {
	assert.Equal(t, dedupeKey("a", "e1"), dedupeKey("a", "e1"))
	assert.NotEqual(t, dedupeKey("a", "e1"), dedupeKey("b", "e1"))
	assert.NotEqual(t, dedupeKey("ab", "c"), dedupeKey("a", "bc"), "the separator keeps the parts apart")
	assert.NotZero(t, dedupeKey("", ""))
}
