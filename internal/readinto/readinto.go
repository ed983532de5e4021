package readinto

import (
	"errors"
	"io"
)

// Append reads r to EOF, appending to dst, and grows dst only when it is
// full: a buffer with room for the whole stream plus one byte (the read
// that sees the end) costs no allocation.
func Append(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
