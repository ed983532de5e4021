package main

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConsoleFlagsReachTheNode: --ui (off by default) and --max-observers
// (64 by default) are wired into sidecar.Config.
func TestConsoleFlagsReachTheNode(t *testing.T) {
	cases := []struct {
		argv      []string
		ui        bool
		observers int
	}{
		{nil, false, 64},
		{[]string{"--ui"}, true, 64},
		{[]string{"--ui=false", "--max-observers", "3"}, false, 3},
	}
	for _, tc := range cases {
		fs, f := newServeFlags()
		require.NoError(t, fs.Parse(tc.argv))
		cfg, err := f.config(nil, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.Equal(t, tc.ui, cfg.UI, "%v", tc.argv)
		require.Equal(t, tc.observers, cfg.MaxObservers, "%v", tc.argv)
	}
}
