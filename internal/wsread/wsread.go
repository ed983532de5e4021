package wsread

import (
	"context"
	"errors"
	"io"

	"github.com/coder/websocket"
)

// Message reads the next message of c into buf[:0], growing buf only when a
// message is larger than any before, and returns it. The context has no
// deadline: with one, coder/websocket arms a timer per read.
func Message(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.Reader(context.Background())
	if err != nil {
		return buf[:0], err
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
