package readinto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestAppendReadsToTheEnd(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	for name, tc := range map[string]struct {
		dst  []byte
		data string
	}{
		"nil buffer":         {nil, long},
		"prefix kept":        {[]byte("pre:"), "data"},
		"exact room":         {make([]byte, 0, 5), "data"},
		"empty stream":       {make([]byte, 0, 8), ""},
		"one byte at a time": {nil, "slow"},
	} {
		t.Run(name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.data)
			if name == "one byte at a time" {
				r = iotest.OneByteReader(r)
			}
			prefix := string(tc.dst)
			got, err := Append(tc.dst, r)
			require.NoError(t, err)
			require.Equal(t, prefix+tc.data, string(got))
		})
	}
}

func TestAppendUsesTheRoomItIsGiven(t *testing.T) {
	buf := make([]byte, 0, 5) // "data" and the read that sees the end
	got, err := Append(buf, strings.NewReader("data"))
	require.NoError(t, err)
	require.Equal(t, &buf[:1][0], &got[0], "no new buffer")
}

func TestAppendReturnsReadErrors(t *testing.T) {
	boom := errors.New("boom")
	got, err := Append(nil, io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(boom)))
	require.ErrorIs(t, err, boom)
	require.Equal(t, "ab", string(got), "what was read before the error")
}
