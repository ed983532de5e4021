package sidecar

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeerClientRefusesAnAnswerPastItsLimit: an answer one byte longer
// than the limit is an error, not a body cut short, and it is not asked
// for again (a retry would get the same answer); one that fits is read
// whole.
func TestPeerClientRefusesAnAnswerPastItsLimit(t *testing.T) {
	size := atomic.Int64{}
	requests := atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`"` + strings.Repeat("x", int(size.Load())-2) + `"`))
	}))
	defer srv.Close()
	pc := newPeerClient(5*time.Second, nil)
	defer pc.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	size.Store(1<<20 + 1)
	ans, err := pc.post(ctx, srv.URL, []byte(`{}`), "", 0)
	require.Error(t, err, "an answer past the limit must fail, not be cut")
	assert.Empty(t, ans.Body)
	assert.Equal(t, int64(1), requests.Load(), "not asked again")

	size.Store(1 << 20)
	ans, err = pc.post(ctx, srv.URL, []byte(`{}`), "", 0)
	require.NoError(t, err)
	assert.Len(t, ans.Body, 1<<20, "an answer at the limit is read whole")
}
