package ws

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any test leaves a goroutine behind: every
// hub must be shut down and every connection closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
