package tasks

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCloseCancelsAndWaits: a running function sees its context cancelled
// by Close, and Close returns only once it has returned (or Close's own
// context ends first, with that context's error).
func TestCloseCancelsAndWaits(t *testing.T) {
	g := New()
	started, release := make(chan struct{}), make(chan struct{})
	var cancelled, finished atomic.Bool
	require.NoError(t, g.Go(func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		cancelled.Store(true)
		<-release
		finished.Store(true)
	}))
	<-started

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, g.Close(gone), context.Canceled, "the function still runs")
	require.Eventually(t, cancelled.Load, 10*time.Second, time.Millisecond, "Close cancels the group's context")
	assert.False(t, finished.Load())

	close(release)
	require.NoError(t, g.Close(context.Background()))
	assert.True(t, finished.Load(), "Close waited for it")
}

// TestNothingStartsAfterStop: once stopped, the group refuses work, runs
// none of it and arms no timer.
func TestNothingStartsAfterStop(t *testing.T) {
	g := New()
	g.Stop()
	ran := false
	assert.ErrorIs(t, g.Go(func(context.Context) { ran = true }), ErrClosed)
	timer, err := g.AfterFunc(0, func(context.Context) { ran = true })
	assert.ErrorIs(t, err, ErrClosed)
	assert.Nil(t, timer)
	require.NoError(t, g.Close(context.Background()))
	assert.False(t, ran)
}

// TestAfterFuncRunsWithTheGroupsContext: a timer's function runs once its
// time has come, and Close waits for it while it runs.
func TestAfterFuncRunsWithTheGroupsContext(t *testing.T) {
	g := New()
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	timer, err := g.AfterFunc(0, func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		<-release
		finished.Store(true)
	})
	require.NoError(t, err)
	require.NotNil(t, timer)
	<-started
	close(release)
	require.NoError(t, g.Close(context.Background()))
	assert.True(t, finished.Load())
}

// TestWorkOfferedDuringCloseRunsOrIsRefused: work offered from many
// goroutines while the group closes is either refused or run to its end
// before Close returns; none starts behind it.
func TestWorkOfferedDuringCloseRunsOrIsRefused(t *testing.T) {
	g := New()
	var accepted, ran atomic.Int64
	var offers sync.WaitGroup
	for range 64 {
		offers.Add(1)
		go func() {
			defer offers.Done()
			for range 20 {
				if g.Go(func(context.Context) { ran.Add(1) }) == nil {
					accepted.Add(1)
				}
			}
		}()
	}
	require.NoError(t, g.Close(context.Background()))
	ranAtClose := ran.Load()
	offers.Wait()
	assert.Equal(t, accepted.Load(), ranAtClose, "everything accepted ran before Close returned")
	assert.Equal(t, ranAtClose, ran.Load(), "nothing ran after Close returned")
}
