package testkit

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// shutdownTimeout bounds a node's shutdown at the end of a test: its drain
// and hand-off take well under a second on loopback.
const shutdownTimeout = 10 * time.Second

// Server is what a test runs for its length: a sidecar.Node, for one.
type Server interface {
	Start()
	Shutdown(ctx context.Context) error
}

// Start starts s and shuts it down when the test ends, which must succeed
// within shutdownTimeout. A test may shut s down earlier itself; Shutdown
// is idempotent.
func Start(t testing.TB, s Server) {
	t.Helper()
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
	})
}

// Logger discards logs unless SWITCHYARD_TEST_LOGS is set to a level
// (debug, info, warn or error), then logs text to stderr from that level.
func Logger() *slog.Logger {
	var level slog.Level
	if v := os.Getenv("SWITCHYARD_TEST_LOGS"); v != "" && level.UnmarshalText([]byte(v)) == nil {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.DiscardHandler)
}
