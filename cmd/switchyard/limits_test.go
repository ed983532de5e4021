package main

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConnectionCapFlagsReachTheConfig: the per-participant and
// per-credential connection caps are wired from their flags, and left to
// the node's defaults when not given.
func TestConnectionCapFlagsReachTheConfig(t *testing.T) {
	fs, f := newServeFlags()
	require.NoError(t, parseWithEnv(fs, []string{"--max-connections-per-participant", "3", "--max-connections-per-credential", "40"}))
	cfg, err := f.config(nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, 3, cfg.MaxConnectionsPerParticipant)
	assert.Equal(t, 40, cfg.MaxConnectionsPerCredential)

	fs, f = newServeFlags()
	require.NoError(t, parseWithEnv(fs, nil))
	cfg, err = f.config(nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, 8, cfg.MaxConnectionsPerParticipant)
	assert.Zero(t, cfg.MaxConnectionsPerCredential, "0: the node's default, a quarter of --max-connections")
}
