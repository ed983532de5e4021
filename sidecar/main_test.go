package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger is testkit.Logger (SWITCHYARD_TEST_LOGS=debug shows a test's
// logs).
func testLogger() *slog.Logger { return testkit.Logger() }

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
	testkit.Start(t, n)
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
type client = testkit.WS

// attach connects participant to n with the extra query parameters given
// (session_id, resume_from, batch, ...) and returns the client after its
// welcome frame, which it also returns.
func attach(t testing.TB, n *Node, participant string, query url.Values, header http.Header) (*client, map[string]any) {
	t.Helper()
	return testkit.Attach(t, attachURL(n, participant, query), &websocket.DialOptions{HTTPHeader: header})
}

func dial(n *Node, participant string, query url.Values, header http.Header) (*websocket.Conn, *http.Response, error) {
	return testkit.Dial(attachURL(n, participant, query), &websocket.DialOptions{HTTPHeader: header})
}

// attachURL is n's WebSocket URL with query and participant_id (unless
// participant is "").
func attachURL(n *Node, participant string, query url.Values) string {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if participant != "" {
		q.Set("participant_id", participant)
	}
	return testkit.AttachURL(n.URL(), q)
}

// metricValue reads one sample of n's /metrics, e.g.
// `switchyard_external_participants_dropped_total{reason="failing"}`; -1
// when it is absent.
func metricValue(t testing.TB, n *Node, sample string) float64 {
	t.Helper()
	r := do(t, http.MethodGet, n.URL()+"/metrics", nil, nil)
	require.Equal(t, http.StatusOK, r.Status, "/metrics answered %s", r.Raw)
	for line := range strings.SplitSeq(string(r.Raw), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			require.NoError(t, err, "%s", line)
			return v
		}
	}
	return -1
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
