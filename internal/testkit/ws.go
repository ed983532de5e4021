package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

// The deadlines of a test client's socket calls: generous, because a test
// waits for what a node sends on a loaded machine, and a deadline only
// bounds a failure.
const (
	dialTimeout  = 10 * time.Second
	readTimeout  = 10 * time.Second // each message
	writeTimeout = 10 * time.Second
	closeTimeout = 15 * time.Second // all frames until the close
)

// AttachURL is the WebSocket URL (SPEC's /v1/gateway/ws) of the node
// serving at base (http:// or https://), with the query q.
func AttachURL(base string, q url.Values) string {
	return "ws" + strings.TrimPrefix(base, "http") + "/v1/gateway/ws?" + q.Encode()
}

// Dial opens a WebSocket to u with opts (nil: the defaults) and lifts the
// read limit, since tests read messages of any size. On a refused upgrade
// the response holds the node's answer; its body is already in memory.
func Dial(u string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, opts)
	if err == nil {
		c.SetReadLimit(-1)
	}
	return c, resp, err
}

// WS is a real WebSocket client in a test: it reads a node's frames one at
// a time (splitting the newline-joined frames of a batch=1 message), sends
// frames and waits for the close. Its methods fail the test on an error.
type WS struct {
	t testing.TB
	// Conn is the socket, for the tests that close it or read it
	// themselves.
	Conn *websocket.Conn
	// pending holds the frames of a batched message not yet returned.
	pending [][]byte
}

// NewWS wraps conn, which is closed when the test ends if it is still
// open.
func NewWS(t testing.TB, conn *websocket.Conn) *WS {
	t.Cleanup(func() { _ = conn.CloseNow() })
	return &WS{t: t, Conn: conn}
}

// ReportTo makes the client fail t from now on: a subtest's, when the
// client outlives it.
func (c *WS) ReportTo(t testing.TB) { c.t = t }

// Attach dials u, which must upgrade, and returns the client and its
// first frame, which must be the welcome.
func Attach(t testing.TB, u string, opts *websocket.DialOptions) (*WS, map[string]any) {
	t.Helper()
	conn, _, err := Dial(u, opts)
	require.NoError(t, err, "attach %s", u)
	c := NewWS(t, conn)
	welcome := c.Next()
	require.Equal(t, "welcome", welcome["type"], "the first frame must be the welcome: %v", welcome)
	return c, welcome
}

// ReadMessage reads one WebSocket message, which must be text, as it is
// (several frames when batched).
func (c *WS) ReadMessage() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	typ, data, err := c.Conn.Read(ctx)
	if err == nil && typ != websocket.MessageText {
		return nil, fmt.Errorf("message type %v, want text", typ)
	}
	return data, err
}

// NextRaw returns the next frame's bytes.
func (c *WS) NextRaw() []byte {
	c.t.Helper()
	if len(c.pending) == 0 {
		data, err := c.ReadMessage()
		require.NoError(c.t, err, "reading a frame")
		c.pending = bytes.Split(data, []byte("\n"))
	}
	f := c.pending[0]
	c.pending = c.pending[1:]
	return f
}

// Next returns the next frame decoded.
func (c *WS) Next() map[string]any {
	c.t.Helper()
	raw := c.NextRaw()
	var f map[string]any
	require.NoError(c.t, json.Unmarshal(raw, &f), "frame is not JSON: %s", raw)
	return f
}

// Buffered counts the frames of the last message read that no Next has
// returned yet: more than 0 when frames came batched.
func (c *WS) Buffered() int { return len(c.pending) }

// Send writes v as one JSON frame.
func (c *WS) Send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(c.t, err)
	c.SendRaw(b)
}

// SendRaw writes b as one text message.
func (c *WS) SendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	require.NoError(c.t, c.Conn.Write(ctx, websocket.MessageText, b))
}

// ReadUntilClose reads until the connection ends and returns the frames
// that came before (the unreturned ones of a batch first) and the close
// code.
func (c *WS) ReadUntilClose() ([][]byte, websocket.StatusCode) {
	c.t.Helper()
	frames := c.pending
	c.pending = nil
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	for {
		typ, data, err := c.Conn.Read(ctx)
		if err != nil {
			require.NoError(c.t, ctx.Err(), "the connection did not close in time")
			return frames, websocket.CloseStatus(err)
		}
		require.Equal(c.t, websocket.MessageText, typ, "a binary message: %q", data)
		frames = append(frames, bytes.Split(data, []byte("\n"))...)
	}
}

// CloseStatus reads until the connection ends and returns its close code.
func (c *WS) CloseStatus() websocket.StatusCode {
	c.t.Helper()
	_, code := c.ReadUntilClose()
	return code
}
