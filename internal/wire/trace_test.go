package wire

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidTraceparent(t *testing.T) {
	assert.True(t, ValidTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	for _, bad := range []string{"", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"} {
		assert.False(t, ValidTraceparent(bad), bad)
	}
	child := ChildTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	assert.True(t, ValidTraceparent(child))
	assert.Equal(t, "-01", child[52:])
	a, b := NewTraceparent(), NewTraceparent()
	assert.True(t, ValidTraceparent(a), a)
	assert.NotEqual(t, a, b)
}

func TestRandomHex(t *testing.T) {
	for _, n := range []int{0, 8, 32, 40} {
		h := RandomHex(n)
		assert.Len(t, h, 2*n)
		_, err := hex.DecodeString(h)
		assert.NoError(t, err)
	}
	assert.NotEqual(t, RandomHex(8), RandomHex(8))
}
