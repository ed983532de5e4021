package wsread

import (
	"context"

	"github.com/coder/websocket"

	"github.com/switchyard-gw/switchyard/internal/readinto"
)

// Message reads the next message of c into buf[:0], growing buf only when a
// message is larger than any before, and returns it. The context has no
// deadline: with one, coder/websocket arms a timer per read.
func Message(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.Reader(context.Background())
	if err != nil {
		return buf[:0], err
	}
	return readinto.Append(buf[:0], r)
}
