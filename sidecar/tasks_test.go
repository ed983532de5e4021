package sidecar

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/ws"
)

// TestNothingStartsInTheBackgroundAfterShutdown: the node's background
// work (serve loop, sweeper, a held state's expiry) starts through its
// tasks, which refuse work once Shutdown began: a stopped node starts no
// goroutine, arms no expiry, and a Start after Shutdown serves nothing.
// (TestMain's goleak check sees anything that outlived a node.)
func TestNothingStartsInTheBackgroundAfterShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	n := startNode(t, Config{})
	require.NoError(t, n.Shutdown(ctx))
	assert.ErrorIs(t, n.tasks.Go(func(context.Context) { t.Error("work ran after Shutdown") }), tasks.ErrClosed)
	n.gw.Hold(&ws.ParticipantState{ID: "bob"}, "node-2", time.Nanosecond)
	assert.False(t, n.gw.HeldExpiryArmed("bob"), "no expiry timer is armed once the node stopped")
	n.gw.DropHeld()

	logs := &errLog{}
	late, err := New(Config{Listen: "127.0.0.1:0", Logger: slog.New(logs)})
	require.NoError(t, err)
	require.NoError(t, late.Shutdown(ctx))
	late.Start()
	assert.NotContains(t, logs.lines(), "serving", "a node shut down before it started does not serve")
	assert.ErrorIs(t, late.tasks.Go(func(context.Context) {}), tasks.ErrClosed)
}
