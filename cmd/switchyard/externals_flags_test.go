package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExternalParticipantFlagsReachTheConfig: the limits on external
// participants are serve flags (and so environment variables and config
// keys) wired into the node's configuration, with the documented defaults.
func TestExternalParticipantFlagsReachTheConfig(t *testing.T) {
	fs, f := newServeFlags()
	require.NoError(t, parseWithEnv(fs, nil))
	cfg, err := f.config(nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, 10000, cfg.MaxExternalParticipants)
	assert.Equal(t, 1000, cfg.MaxExternalsPerCredential)
	assert.Equal(t, 30*time.Minute, cfg.ExternalTTL)
	assert.Equal(t, 5, cfg.ExternalFailureLimit)
	assert.Equal(t, time.Minute, cfg.ExternalRetryAfter)

	t.Setenv("SWITCHYARD_EXTERNAL_TTL", "90s")
	fs, f = newServeFlags()
	require.NoError(t, parseWithEnv(fs, []string{"--max-external-participants", "7",
		"--max-externals-per-credential", "3", "--external-failure-limit", "2", "--external-retry-after", "10s"}))
	cfg, err = f.config(nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, 7, cfg.MaxExternalParticipants)
	assert.Equal(t, 3, cfg.MaxExternalsPerCredential)
	assert.Equal(t, 90*time.Second, cfg.ExternalTTL)
	assert.Equal(t, 2, cfg.ExternalFailureLimit)
	assert.Equal(t, 10*time.Second, cfg.ExternalRetryAfter)
}
