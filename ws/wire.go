package ws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// The write path frames data messages itself and hands them to the socket
// directly: every frame ready for a connection — one WebSocket message each,
// or newline-joined into few with batch=1 — goes out in a single write
// system call, built in a pooled buffer that an idle connection does not
// hold; so do the keepalive's pings (keepalive.go). coder/websocket still
// does the handshake, reads, and the other control frames (pong, close);
// each of its frames fits its small buffer, so it too reaches the socket in
// one write. guardedConn's lock orders the two writers, so frames stay
// whole, and no data follows a close frame.
//
// Two things here rely on coder/websocket v1.8.15's internals, and the
// tests in wire_test.go fail if they change: it writes each control frame
// in a single Write call (guardedConn reads the opcode from its first
// byte), and at Accept it re-reads what our reader had buffered from a
// slice of that same buffer (which keeps early client bytes, see Hijack).

// Buffer sizes of coder/websocket's reader and writer. The reader takes
// client frames, which are small (acks, joins, submits); a larger one is
// read straight into the message. The writer only carries control frames
// (at most 125 bytes of payload and a 14-byte header).
const (
	connReadBufferSize  = 512
	connWriteBufferSize = 256
)

// appendFrameHeader appends the header of a final, unmasked text frame of n
// payload bytes (RFC 6455, section 5.2).
func appendFrameHeader(buf []byte, n int) []byte {
	const finText = 0x80 | 0x1
	switch {
	case n < 126:
		return append(buf, finText, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(buf, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(buf, finText, 127), uint64(n))
	}
}

// writeBuffers pools the buffers writers build their writes in, so that a
// connection holds one only while it writes.
var writeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// hijackRecorder hands coder/websocket small buffers at the hijack and keeps
// the connection for the data writes.
type hijackRecorder struct {
	http.ResponseWriter
	conn *guardedConn
}

// guardedConn is the socket as both writers see it. coder/websocket's writes
// (control frames) and the data writes take one lock, and once a close frame
// has gone out — coder/websocket answers a client's close, or closes with
// 1009 or 1002 from inside a read — no data frame follows it (RFC 6455,
// section 5.5.1). Reads and Close do not take the lock: closing is how a
// write stuck on a dead client is cut.
type guardedConn struct {
	net.Conn
	mu        sync.Mutex
	closeSent bool
}

// Write is coder/websocket's write: whole frames, one per call (its buffer
// holds any control frame).
func (g *guardedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == 0x8 { // opcode 8: close
		g.closeSent = true
	}
	return g.Conn.Write(p)
}

// writeData writes data frames unless a close frame went out before.
func (g *guardedConn) writeData(p []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closeSent {
		return net.ErrClosed
	}
	_, err := g.Conn.Write(p)
	return err
}

// Hijack takes over the connection from the HTTP server. Bytes the server
// had already read past the upgrade request (a client that sent frames
// without waiting for the answer) stay in front of the new reader.
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	raw, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	conn := &guardedConn{Conn: raw}
	h.conn = conn
	var r *bufio.Reader
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(connReadBufferSize, n))
		if _, err := r.Peek(n); err != nil { // buffer them: coder/websocket keeps what is buffered
			conn.Close()
			return nil, nil, errors.Join(errors.New("websocket: keeping early client bytes"), err)
		}
	} else {
		r = bufio.NewReaderSize(conn, connReadBufferSize)
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, connWriteBufferSize)), nil
}

// Unwrap lets http.ResponseController reach the server's writer.
func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }
