package rawws

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// ReadBufferSize is the size of the buffered reader over the socket: large
// enough that a batch of frames arrives in one read system call.
const ReadBufferSize = 64 << 10

// DefaultMaxMessageBytes bounds a message unless Conn.MaxMessageBytes says
// otherwise.
const DefaultMaxMessageBytes = 64 << 20

// controlWriteTimeout bounds the write of a pong or a close frame.
const controlWriteTimeout = 5 * time.Second

// handshakeGUID is the fixed GUID of RFC 6455 section 1.3.
const handshakeGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// ErrClosed is returned by Message once the server sent a close frame.
var ErrClosed = errors.New("rawws: connection closed by the server")

// Conn is a client WebSocket connection that reads messages. Message must
// be called from one goroutine; Close may be called from any.
type Conn struct {
	// MaxMessageBytes bounds a message (joined frames included); Message
	// fails past it.
	MaxMessageBytes uint64

	conn      net.Conn
	br        *bufio.Reader
	writeMu   sync.Mutex // pongs from the reader, the close frame from Close
	closeSent bool       // under writeMu: a close frame was sent
}

// Dial connects to rawURL (ws:// only) with dialer, sends header with the
// upgrade request, and checks the server's handshake answer.
func Dial(ctx context.Context, dialer *net.Dialer, rawURL string, header http.Header) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("rawws: scheme %q: only ws:// is supported", u.Scheme)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	nc, err := dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c, err := handshake(ctx, nc, u, header)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, nc net.Conn, u *url.URL, header http.Header) (*Conn, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
		defer func() { _ = nc.SetDeadline(noDeadline) }()
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])

	req := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{}}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(nc); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, ReadBufferSize)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("rawws: handshake answered %s", resp.Status)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), AcceptKey(key); got != want {
		return nil, fmt.Errorf("rawws: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	return &Conn{MaxMessageBytes: DefaultMaxMessageBytes, conn: nc, br: br}, nil
}

var noDeadline = time.Time{}

// AcceptKey is the Sec-WebSocket-Accept answer to a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + handshakeGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Message reads the next data message into buf[:0] and returns it; a
// message split over continuation frames is joined. buf grows only for a
// message larger than any before.
func (c *Conn) Message(buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		fin, opcode, payload, err := c.frameHeader()
		if err != nil {
			return buf, err
		}
		if opcode >= 8 { // control frame: at most 125 bytes, never fragmented
			var body [125]byte
			if payload > uint64(len(body)) {
				return buf, fmt.Errorf("rawws: control frame of %d bytes", payload)
			}
			if _, err := io.ReadFull(c.br, body[:payload]); err != nil {
				return buf, err
			}
			switch opcode {
			case 8: // answered with a close frame, as RFC 6455 section 5.5.1 asks
				_ = c.writeControl(8, body[:min(payload, 2)])
				return buf, ErrClosed
			case 9:
				if err := c.writeControl(10, body[:payload]); err != nil {
					return buf, err
				}
			}
			continue
		}
		start := len(buf)
		if payload > c.MaxMessageBytes-uint64(start) {
			return buf, fmt.Errorf("rawws: a message of more than %d bytes", c.MaxMessageBytes)
		}
		buf = grow(buf, payload)
		if _, err := io.ReadFull(c.br, buf[start:]); err != nil {
			return buf[:start], err
		}
		if fin {
			return buf, nil
		}
	}
}

// frameHeader reads one frame header. Frames from a server are unmasked
// (RFC 6455 section 5.1); a masked one is refused.
func (c *Conn) frameHeader() (fin bool, opcode byte, payload uint64, err error) {
	b, err := c.br.Peek(2)
	if err != nil {
		return false, 0, 0, err
	}
	fin, opcode = b[0]&0x80 != 0, b[0]&0x0f
	if b[1]&0x80 != 0 {
		return false, 0, 0, errors.New("rawws: masked frame from the server")
	}
	size := 2
	switch b[1] & 0x7f {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if b, err = c.br.Peek(size); err != nil {
		return false, 0, 0, err
	}
	switch size {
	case 2:
		payload = uint64(b[1] & 0x7f)
	case 4:
		payload = uint64(binary.BigEndian.Uint16(b[2:]))
	default:
		if payload = binary.BigEndian.Uint64(b[2:]); payload>>63 != 0 {
			return false, 0, 0, errors.New("rawws: frame length with its top bit set")
		}
	}
	_, _ = c.br.Discard(size)
	return fin, opcode, payload, nil
}

// grow extends buf by n bytes, reallocating only when its capacity is short.
func grow(buf []byte, n uint64) []byte {
	need := uint64(len(buf)) + n
	if need <= uint64(cap(buf)) {
		return buf[:need]
	}
	out := make([]byte, need, max(need, 2*uint64(cap(buf))))
	copy(out, buf)
	return out
}

// writeControl sends a masked control frame (clients must mask); nothing
// after a close frame.
func (c *Conn) writeControl(opcode byte, body []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.closeSent {
		return nil
	}
	c.closeSent = opcode == 8
	var frame [2 + 4 + 125]byte
	frame[0], frame[1] = 0x80|opcode, 0x80|byte(len(body))
	mask := frame[2:6]
	_, _ = rand.Read(mask)
	for i, b := range body {
		frame[6+i] = b ^ mask[i%4]
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	_, err := c.conn.Write(frame[:6+len(body)])
	return err
}

// Close sends a normal close frame (unless one answered the server's) and
// closes the socket without waiting for the server's answer.
func (c *Conn) Close() error {
	_ = c.writeControl(8, []byte{0x03, 0xe8}) // 1000, normal closure
	return c.conn.Close()
}
