package main

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/ws"
)

// TestMaxMailboxBytesFlagReachesTheNode: --max-mailbox-bytes is wired into
// sidecar.Config, and its default is the library's.
func TestMaxMailboxBytesFlagReachesTheNode(t *testing.T) {
	for args, want := range map[string]int64{"": ws.DefaultMaxMailboxBytes, "1048576": 1 << 20, "-1": -1} {
		fs, f := newServeFlags()
		var argv []string
		if args != "" {
			argv = []string{"--max-mailbox-bytes", args}
		}
		require.NoError(t, fs.Parse(argv))
		cfg, err := f.config(nil, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.Equal(t, want, cfg.MaxMailboxBytes, "--max-mailbox-bytes %q", args)
	}
}
