package routing

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/switchyard-gw/switchyard/membership"
)

// TestBreakerOfAnotherNodesExternalHalfOpens: once --external-retry-after
// has passed, one delivery probes the failing gateway again: success
// closes the breaker, failure opens it for another period.
func TestBreakerOfAnotherNodesExternalHalfOpens(t *testing.T) {
	b := breakers{byKey: map[breakerKey]*breakerState{}, limits: ExternalLimits{Max: 10, FailureLimit: 2, RetryAfter: time.Minute, TTL: time.Hour}}
	e := membership.Entry{Participant: "far", Node: "node-1", GatewayURL: "http://127.0.0.1:9"}
	t0 := time.Unix(1_000_000, 0)
	assert.False(t, b.record(e, false, t0))
	assert.True(t, b.allow(e, t0), "one failure is not enough")
	assert.True(t, b.record(e, false, t0), "the second trips it")
	assert.False(t, b.allow(e, t0.Add(59*time.Second)))
	assert.True(t, b.allow(e, t0.Add(61*time.Second)), "half-open: one probe")
	assert.False(t, b.allow(e, t0.Add(62*time.Second)), "only one")
	assert.False(t, b.record(e, false, t0.Add(62*time.Second)), "a failed probe opens it again, without a second alarm")
	assert.False(t, b.allow(e, t0.Add(121*time.Second)))
	assert.True(t, b.allow(e, t0.Add(123*time.Second)))
	b.record(e, true, t0.Add(123*time.Second))
	assert.True(t, b.allow(e, t0.Add(124*time.Second)), "a success closes it")
	assert.Empty(t, b.byKey, "and forgets it")

	for i := range 20 { // bounded by limits.Max
		b.record(membership.Entry{Participant: strconv.Itoa(i), Node: "node-1"}, false, t0)
	}
	assert.Len(t, b.byKey, 10)
	b.prune(t0.Add(time.Hour + time.Second))
	assert.Empty(t, b.byKey, "old failures are forgotten")
}
