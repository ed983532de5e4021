package rawws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

func dial(t *testing.T, url string, header http.Header) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, &net.Dialer{}, url, header)
}

func TestAcceptKeyIsTheRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	require.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="))
}

// A coder/websocket server writes messages across every length encoding;
// the client reads each whole, reusing its buffer, answers the server's
// ping, and sees the close frame as ErrClosed.
func TestReadsMessagesFromARealServer(t *testing.T) {
	msgs := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("b"), 125), bytes.Repeat([]byte("c"), 126),
		bytes.Repeat([]byte("d"), 65535), bytes.Repeat([]byte("e"), 65536), bytes.Repeat([]byte("f"), 300_000)}
	served := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			served <- err
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(r.Context()) // handles the client's pong and close frames
		for _, m := range msgs {
			if err := c.Write(ctx, websocket.MessageText, m); err != nil {
				served <- err
				return
			}
		}
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.Ping(pingCtx); err != nil { // returns once the client's pong arrived
			served <- err
			return
		}
		if err := c.Write(ctx, websocket.MessageBinary, []byte("after ping")); err != nil {
			served <- err
			return
		}
		served <- c.Close(websocket.StatusNormalClosure, "done") // waits for the client's close frame
	}))
	defer srv.Close()

	c, err := dial(t, wsURL(srv), http.Header{"Authorization": {"Bearer k"}})
	require.NoError(t, err)
	buf := make([]byte, 0, 16)
	for i, want := range msgs {
		buf, err = c.Message(buf)
		require.NoError(t, err, "message %d", i)
		require.Equal(t, want, buf, "message %d", i)
	}
	require.GreaterOrEqual(t, cap(buf), 300_000, "the buffer grew to the largest message and is kept")
	buf, err = c.Message(buf)
	require.NoError(t, err)
	require.Equal(t, "after ping", string(buf))
	_, err = c.Message(buf)
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, c.Close())
	require.NoError(t, <-served, "the server saw the pong and a clean close")
}

// rawServer answers the handshake with the given accept key (computed when
// empty) and then writes frames as given, byte for byte.
func rawServer(t *testing.T, accept string, frames ...[]byte) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		answer := accept
		if answer == "" {
			answer = AcceptKey(r.Header.Get("Sec-WebSocket-Key"))
		}
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + answer + "\r\n\r\n")
		for _, f := range frames {
			_, _ = rw.Write(f)
		}
		_ = rw.Flush()
		_, _ = bufio.NewReader(nc).ReadByte() // hold the connection until the client closes it
	}))
}

// dialRaw dials a rawServer that writes frames; both close with the test.
func dialRaw(t *testing.T, frames ...[]byte) *Conn {
	t.Helper()
	srv := rawServer(t, "", frames...)
	t.Cleanup(srv.Close)
	c, err := dial(t, wsURL(srv), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func frame(fin bool, opcode byte, payload string) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	return append([]byte{b0, byte(len(payload))}, payload...)
}

func TestJoinsContinuationFrames(t *testing.T) {
	c := dialRaw(t, frame(false, 1, "one "), frame(false, 0, "two "), frame(true, 0, "three"), frame(true, 2, "next"))
	buf, err := c.Message(nil)
	require.NoError(t, err)
	require.Equal(t, "one two three", string(buf))
	buf, err = c.Message(buf)
	require.NoError(t, err)
	require.Equal(t, "next", string(buf))
}

func TestRefusesAMaskedServerFrame(t *testing.T) {
	masked := []byte{0x81, 0x80 | 1, 0, 0, 0, 0, 'x'}
	_, err := dialRaw(t, masked).Message(nil)
	require.ErrorContains(t, err, "masked frame")
}

func TestLongLengthEncodingsAreRead(t *testing.T) {
	long := make([]byte, 10)
	long[0], long[1] = 0x82, 127
	binary.BigEndian.PutUint64(long[2:], 3)
	buf, err := dialRaw(t, append(long, "abc"...)).Message(nil)
	require.NoError(t, err)
	require.Equal(t, "abc", string(buf), "a short payload in the 64-bit length form")
}

func TestRefusesOversizedAndMalformedLengths(t *testing.T) {
	topBit := []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}
	_, err := dialRaw(t, topBit).Message(nil)
	require.ErrorContains(t, err, "top bit")

	c2 := dialRaw(t, frame(false, 1, "12345"), frame(true, 0, "678"))
	c2.MaxMessageBytes = 7
	_, err = c2.Message(nil)
	require.ErrorContains(t, err, "more than 7 bytes", "the limit counts the joined frames")
}

func TestHandshakeFailures(t *testing.T) {
	t.Run("wrong accept key", func(t *testing.T) {
		srv := rawServer(t, "bm90IHRoZSBrZXk=")
		defer srv.Close()
		_, err := dial(t, wsURL(srv), nil)
		require.ErrorContains(t, err, "Sec-WebSocket-Accept")
	})
	t.Run("not upgraded", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusForbidden)
		}))
		defer srv.Close()
		_, err := dial(t, wsURL(srv), nil)
		require.ErrorContains(t, err, "403 Forbidden")
	})
	t.Run("only ws scheme", func(t *testing.T) {
		_, err := dial(t, "wss://127.0.0.1:1/", nil)
		require.ErrorContains(t, err, `scheme "wss"`)
	})
}
