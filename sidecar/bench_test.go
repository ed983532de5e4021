package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/internal/wsread"
)

var benchSizes = []int{1, 100, 1000}

func benchEvent(session string) wire.Event {
	return wire.Event{SenderID: "src", SenderType: "ai", EventType: "message", SessionID: session,
		Message: "a message of a typical size for an agent hand-off, about one line of text"}
}

// BenchmarkSubmitToMailboxes measures the core of a submit: validation
// already done, one encoding, and an append to each recipient's mailbox
// (participants offline, so no socket is involved). allocs/op must not grow
// with the number of recipients.
func BenchmarkSubmitToMailboxes(b *testing.B) {
	for _, subs := range benchSizes {
		b.Run("recipients="+strconv.Itoa(subs), func(b *testing.B) {
			n := startNode(b, Config{})
			for i := range subs {
				require.NoError(b, n.gw.Join(fmt.Sprint("p", i), "ai", "s"))
			}
			ev := benchEvent("s")
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := n.gw.Submit(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
		})
	}
}

// BenchmarkSubmitFanoutWebSocket measures submit → delivery over real
// loopback WebSockets to 1, 100 and 1,000 attached subscribers, with and
// without batching. Client reads run in the same process, so B/op and
// allocs/op include the clients' side.
func BenchmarkSubmitFanoutWebSocket(b *testing.B) {
	for _, batch := range []bool{false, true} {
		for _, subs := range benchSizes {
			name := fmt.Sprintf("subscribers=%d/batch=%v", subs, batch)
			b.Run(name, func(b *testing.B) { benchFanout(b, subs, batch) })
		}
	}
}

func benchFanout(b *testing.B, subs int, batch bool) {
	n := startNode(b, Config{MaxConnections: subs + 10})
	var delivered atomic.Int64
	var wg sync.WaitGroup
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			_ = c.CloseNow()
		}
		wg.Wait()
	}()
	q := url.Values{"session_id": {"s"}}
	if batch {
		q.Set("batch", "1")
	}
	for i := range subs {
		c, resp, err := dial(n, fmt.Sprint("p", i), q, nil)
		require.NoError(b, err)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			countFrames(c, &delivered)
		}()
	}
	// Each subscriber's welcome counts as one frame; wait for them all.
	waitFor(&delivered, int64(subs))
	delivered.Add(-int64(subs))

	ev := benchEvent("s")
	ctx := context.Background()
	const window = 256 // keep subscribers within their mailbox and write queue
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := n.gw.Submit(ctx, ev); err != nil {
			b.Fatal(err)
		}
		i++
		if i%window == 0 {
			waitFor(&delivered, int64(i-window)*int64(subs))
		}
	}
	waitFor(&delivered, int64(i)*int64(subs))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*subs), "ns/delivery")
}

func waitFor(counter *atomic.Int64, target int64) {
	for counter.Load() < target {
		time.Sleep(20 * time.Microsecond) // a benchmark pacing wait, not a test assertion
	}
}

// countFrames reads messages with a reused buffer and counts their frames
// until the connection closes. Its context has no deadline: with one,
// every read would allocate, and those client allocations would blur the
// server's figures.
func countFrames(c *websocket.Conn, counter *atomic.Int64) {
	buf := make([]byte, 0, 64<<10)
	for {
		var err error
		if buf, err = wsread.Message(c, buf); err != nil {
			return
		}
		counter.Add(int64(bytes.Count(buf, []byte{'\n'}) + 1))
	}
}

// BenchmarkSubmitHandler measures the node's side of a REST submit without
// the network: the router, middleware, handler, validation, routing and the
// mailboxes of a session of two (offline) participants, called like
// net/http calls it, with and without API keys.
func BenchmarkSubmitHandler(b *testing.B) {
	for _, keys := range [][]string{nil, {"bench-key"}} {
		b.Run(fmt.Sprintf("api_keys=%d", len(keys)), func(b *testing.B) {
			n := startNode(b, Config{RateLimit: -1, APIKeys: keys})
			for _, p := range []string{"p1", "p2"} {
				require.NoError(b, n.gw.Join(p, "ai", "s"))
			}
			h := n.routes()
			body := []byte(testkit.SubmitBody)
			rd := bytes.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, "/v1/gateway/events", rd)
			req.Header.Set("Content-Type", "application/json")
			if keys != nil {
				req.Header.Set("Authorization", "Bearer "+keys[0])
			}
			w := &discardWriter{header: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				w.status = 0
				clear(w.header)
				h.ServeHTTP(w, req)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// discardWriter is the least a handler can write to.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

// BenchmarkSubmitREST measures a whole REST submit over a real loopback
// keep-alive connection: HTTP, middleware, validation, routing and the
// mailboxes of a session of two (offline) participants — the pairs
// scenario's server side, minus the WebSocket writes.
func BenchmarkSubmitREST(b *testing.B) {
	n := startNode(b, Config{RateLimit: -1})
	for _, p := range []string{"p1", "p2"} {
		require.NoError(b, n.gw.Join(p, "ai", "s"))
	}
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	u := n.URL() + "/v1/gateway/events"
	body := []byte(testkit.SubmitBody)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := hc.Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
