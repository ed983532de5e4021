package sidecar

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-gw/switchyard/internal/wire"
)

// rateLimiter is a token bucket per credential: rate requests a second,
// bursts up to burst. Buckets idle long enough to be full again are
// forgotten, so the map stays bounded by the credentials active lately.
type rateLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), now: now, buckets: map[string]*bucket{}}
}

// allow takes a token from key's bucket; when there is none it says how
// long until there is.
func (l *rateLimiter) allow(key string) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second)), false
}

// sweep forgets full buckets, at most once per refill period.
func (l *rateLimiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	if now.Sub(l.swept) < full {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, k)
		}
	}
}

// retryAfter renders a wait as whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(retryAfterSeconds(d))
}

func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// errRateLimited is the 429 for a credential whose bucket is empty; wait is
// how long until it holds a token again, carried as retry_after.
func errRateLimited(wait time.Duration, detail string) *wire.Error {
	e := wire.NewError(http.StatusTooManyRequests, "rate_limited", "", detail)
	e.RetryAfter = retryAfterSeconds(wait)
	return e
}
