package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards logs unless SWITCHYARD_TEST_LOGS is set (to a level:
// debug, info, warn or error).
func testLogger() *slog.Logger {
	var level slog.Level
	if v := os.Getenv("SWITCHYARD_TEST_LOGS"); v != "" && level.UnmarshalText([]byte(v)) == nil {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.DiscardHandler)
}

// startNode runs a node on a random loopback port until the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	n, err := New(cfg)
	require.NoError(t, err)
	n.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, n.Shutdown(ctx))
	})
	return n
}

// apiResponse is a decoded JSON answer.
type apiResponse struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// encodeBody is v as a request body: []byte and string as they are,
// anything else encoded as JSON.
func encodeBody(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case string:
		return []byte(b), nil
	default:
		return json.Marshal(v)
	}
}

// newRequest builds a request with a raw body (nil: none; with one, the
// Content-Type is application/json) and header, where "" removes a header.
func newRequest(ctx context.Context, method, u string, body []byte, header map[string]string) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return req, nil
}

// do sends a request with a raw body to the node and decodes the answer.
func do(t testing.TB, method, u string, body []byte, header map[string]string) apiResponse {
	t.Helper()
	req, err := newRequest(context.Background(), method, u, body, header)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := apiResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &out.Body), "answer is not JSON: %s", raw)
	}
	return out
}

// postJSON posts v (see encodeBody).
func postJSON(t testing.TB, u string, v any, header map[string]string) apiResponse {
	t.Helper()
	body, err := encodeBody(v)
	require.NoError(t, err)
	return do(t, http.MethodPost, u, body, header)
}

// client is a real WebSocket client attached to a node.
type client struct {
	t    testing.TB
	conn *websocket.Conn
	// pending holds frames of a batched message not yet returned.
	pending [][]byte
}

// attach connects participant to n with the extra query parameters given
// (session_id, resume_from, batch, ...) and returns the client after its
// welcome frame, which it also returns.
func attach(t testing.TB, n *Node, participant string, query url.Values, header http.Header) (*client, map[string]any) {
	t.Helper()
	c, resp, err := dial(n, participant, query, header)
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	require.NoError(t, err)
	cl := &client{t: t, conn: c}
	t.Cleanup(func() { _ = c.CloseNow() })
	welcome := cl.next()
	require.Equal(t, "welcome", welcome["type"], "first frame must be the welcome: %v", welcome)
	return cl, welcome
}

func dial(n *Node, participant string, query url.Values, header http.Header) (*websocket.Conn, *http.Response, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if participant != "" {
		q.Set("participant_id", participant)
	}
	u := "ws" + strings.TrimPrefix(n.URL(), "http") + wsPath + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		c.SetReadLimit(-1)
	}
	return c, resp, err
}

// nextRaw returns the next frame's bytes, splitting batched messages.
func (c *client) nextRaw() []byte {
	c.t.Helper()
	if len(c.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, data, err := c.conn.Read(ctx)
		require.NoError(c.t, err)
		c.pending = bytes.Split(data, []byte("\n"))
	}
	f := c.pending[0]
	c.pending = c.pending[1:]
	return f
}

// next returns the next frame decoded.
func (c *client) next() map[string]any {
	c.t.Helper()
	raw := c.nextRaw()
	var f map[string]any
	require.NoError(c.t, json.Unmarshal(raw, &f), "frame is not JSON: %s", raw)
	return f
}

// send writes one client frame.
func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(c.t, err)
	c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(c.t, c.conn.Write(ctx, websocket.MessageText, b))
}

// closeStatus reads until the connection ends and returns its close code.
func (c *client) closeStatus() websocket.StatusCode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		if _, _, err := c.conn.Read(ctx); err != nil {
			require.NoError(c.t, ctx.Err(), "the connection did not close in time")
			return websocket.CloseStatus(err)
		}
	}
}

// submit posts an event to the node's REST API and requires a 200.
func submit(t testing.TB, n *Node, ev map[string]any) apiResponse {
	t.Helper()
	r := postJSON(t, n.URL()+"/v1/gateway/events", ev, nil)
	require.Equal(t, http.StatusOK, r.Status, "submit answered %s", r.Raw)
	return r
}

// seqOf reads a frame's seq.
func seqOf(f map[string]any) uint64 {
	v, _ := f["seq"].(float64)
	return uint64(v)
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
