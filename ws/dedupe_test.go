package ws

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	assert.LessOrEqual(t, len(d.index), 3)

	// Expiry forgets old keys and frees the memory when empty.
	d.expire(t0.Add(time.Second))
	assert.Nil(t, d.index)
	assert.Nil(t, d.ring)
	assert.False(t, d.seenOrAdd(4, t0.Add(2*time.Second), time.Hour))
}

func TestDedupeIndexBuiltOnFirstLookupFindsKeysAddedBefore(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := dedupeIndex{max: 4}
	for k := uint64(1); k <= 6; k++ { // 1 and 2 fall out of the ring
		d.add(k, t0.Add(time.Duration(k)*time.Second))
	}
	assert.Nil(t, d.index, "adding alone builds no map")
	assert.False(t, d.seen(1, t0.Add(10*time.Second), time.Hour), "pushed out before the lookup")
	assert.True(t, d.seen(3, t0.Add(10*time.Second), time.Hour))
	assert.True(t, d.seen(6, t0.Add(10*time.Second), time.Hour))
	assert.False(t, d.seen(6, t0.Add(time.Hour+7*time.Second), time.Hour), "past the window")
	assert.Len(t, d.index, 4)

	// From now on the map follows adds and evictions.
	d.add(7, t0.Add(11*time.Second))
	assert.True(t, d.seen(7, t0.Add(12*time.Second), time.Hour))
	assert.False(t, d.seen(3, t0.Add(12*time.Second), time.Hour), "3 was evicted by 7")
	assert.Len(t, d.index, 4)

	// A key added twice counts from its latest time; evicting the older
	// record keeps the newer one.
	d.add(5, t0.Add(20*time.Second))
	assert.True(t, d.seen(5, t0.Add(20*time.Second+30*time.Minute), 45*time.Minute))
}

func TestDedupeKeyDependsOnSenderAndID(t *testing.T) {
	assert.Equal(t, dedupeKey("a", "e1"), dedupeKey("a", "e1"))
	assert.NotEqual(t, dedupeKey("a", "e1"), dedupeKey("b", "e1"))
	assert.NotEqual(t, dedupeKey("ab", "c"), dedupeKey("a", "bc"), "the separator keeps the parts apart")
	assert.NotZero(t, dedupeKey("", ""))
}

func TestHubRetryOfAFreshIDIsADuplicate(t *testing.T) {
	th := newTestHub(t, Config{})
	require.NoError(t, th.hub.Join("bob", "ai", "s"))
	bob := th.hub.Lookup("bob")
	at := time.Now()

	first := NewEvent("assigned-1", "s", json.RawMessage(`{}`), at).WithSender("alice").WithFreshID()
	assert.Equal(t, Queued, th.hub.Deliver(bob, first))
	// The client retries with the event_id the 502 answer gave it: not fresh now.
	retry := NewEvent("assigned-1", "s", json.RawMessage(`{}`), at.Add(time.Second)).WithSender("alice")
	assert.Equal(t, Duplicate, th.hub.Deliver(bob, retry))
	other := NewEvent("assigned-2", "s", json.RawMessage(`{}`), at.Add(time.Second)).WithSender("alice")
	assert.Equal(t, Queued, th.hub.Deliver(bob, other))
}
