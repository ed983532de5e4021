package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchyard-gw/switchyard/internal/rawws"
)

// result is one scenario's figures (printed as one JSON line).
type result struct {
	Scenario         string  `json:"scenario"`
	Batch            bool    `json:"batch"`
	Subscribers      int     `json:"subscribers"`
	EventsSent       int64   `json:"events_sent"`
	Deliveries       int64   `json:"deliveries"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	Seconds          float64 `json:"seconds"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	P50ms            float64 `json:"p50_ms"`
	P90ms            float64 `json:"p90_ms"`
	P99ms            float64 `json:"p99_ms"`
	P999ms           float64 `json:"p999_ms"`
	MaxMs            float64 `json:"max_ms"`
	ServerCPUSec     float64 `json:"server_cpu_s"`
	ServerSysCPUSec  float64 `json:"server_sys_cpu_s"` // of ServerCPUSec, the time in the kernel
	PerServerCPUSec  float64 `json:"deliveries_per_server_cpu_s"`
	ServerRSSMiB     float64 `json:"server_rss_mib"`
	ServerPeakRSSMiB float64 `json:"server_peak_rss_mib"`
	RSSPerConnKiB    float64 `json:"rss_per_connection_kib,omitempty"`
	BenchCPUSec      float64 `json:"bench_cpu_s"`
	SubmitErrors     int64   `json:"submit_errors"`
}

func (r result) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s (batch=%v, %d subscribers)\n", r.Scenario, r.Batch, r.Subscribers)
	fmt.Fprintf(tw, "events sent / deliveries\t%d / %d (lost %d, duplicates %d, submit errors %d)\n", r.EventsSent, r.Deliveries, r.Lost, r.Duplicates, r.SubmitErrors)
	fmt.Fprintf(tw, "deliveries/s\t%.0f over %.1f s\n", r.DeliveriesPerSec, r.Seconds)
	fmt.Fprintf(tw, "latency ms\tp50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs)
	fmt.Fprintf(tw, "server CPU\t%.2f s (%.0f deliveries per CPU-second), %.2f s of it in the kernel\n", r.ServerCPUSec, r.PerServerCPUSec, r.ServerSysCPUSec)
	fmt.Fprintf(tw, "server RSS\t%.1f MiB (peak %.1f MiB)\n", r.ServerRSSMiB, r.ServerPeakRSSMiB)
	if r.RSSPerConnKiB > 0 {
		fmt.Fprintf(tw, "RSS per connection\t%.1f KiB\n", r.RSSPerConnKiB)
	}
	fmt.Fprintf(tw, "load generator CPU\t%.2f s\n", r.BenchCPUSec)
	_ = tw.Flush()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// dialers spread WebSocket connections over source addresses 127.0.0.1,
// 127.0.0.2, … so that tens of thousands do not exhaust one address's ports.
func dialers(sources int) []*net.Dialer {
	var out []*net.Dialer
	for i := range max(sources, 1) {
		out = append(out, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}})
	}
	return out
}

// subscriber is one attached participant that counts what it receives. It
// reads with rawws: the load generator shares the cores with the node it
// measures, so its reading must cost as little as possible.
type subscriber struct {
	conn *rawws.Conn
	hist histogram
	seen []uint64 // bitset of event indexes received
	got  atomic.Int64
	dups int64
}

func attachSubscriber(ctx context.Context, dialer *net.Dialer, base, participant string, sessions []string, batch bool, apiKey string) (*subscriber, error) {
	q := url.Values{"participant_id": {participant}, "session_id": sessions}
	if batch {
		q.Set("batch", "1")
	}
	u := "ws" + strings.TrimPrefix(strings.TrimSuffix(base, "/"), "http") + "/v1/gateway/ws?" + q.Encode()
	h := http.Header{}
	if apiKey != "" {
		h.Set("Authorization", "Bearer "+apiKey)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := rawws.Dial(dctx, dialer, u, h)
	if err != nil {
		return nil, err
	}
	// The welcome frame: attached (and routable cluster-wide) from here on.
	if _, err := c.Message(nil); err != nil {
		_ = c.Close()
		return nil, err
	}
	return &subscriber{conn: c}, nil
}

var (
	messageMarker = []byte(`"message":"t=`)
	eventPrefix   = []byte(`{"type":"event"`)
)

// read counts event frames until the connection closes. A message is
// "t=<unix ns>;i=<index>;<padding>"; only those bytes are parsed.
func (s *subscriber) read() {
	buf := make([]byte, 0, 64<<10)
	for {
		var err error
		if buf, err = s.conn.Message(buf); err != nil {
			return
		}
		now := time.Now().UnixNano()
		for frame := range bytes.SplitSeq(buf, []byte{'\n'}) {
			if !bytes.HasPrefix(frame, eventPrefix) {
				continue
			}
			i := bytes.Index(frame, messageMarker)
			if i < 0 {
				continue
			}
			rest := frame[i+len(messageMarker):]
			semi := bytes.IndexByte(rest, ';')
			sent, _ := strconv.ParseInt(string(rest[:max(semi, 0)]), 10, 64)
			rest = rest[semi+3:] // past ";i="
			end := bytes.IndexByte(rest, ';')
			idx, _ := strconv.Atoi(string(rest[:max(end, 0)]))
			s.hist.add(time.Duration(now - sent))
			word := idx / 64
			for len(s.seen) <= word {
				s.seen = append(s.seen, 0)
			}
			if s.seen[word]&(1<<(idx%64)) != 0 {
				s.dups++
			} else {
				s.seen[word] |= 1 << (idx % 64)
				s.got.Add(1)
			}
		}
	}
}

// publisher submits events over REST.
type publisher struct {
	hc      *http.Client
	url     string
	apiKey  string
	pad     string
	next    atomic.Int64
	errors  atomic.Int64
	sent    atomic.Int64
	perSess []atomic.Int64 // events accepted per session index
}

// maxInFlight is how many submits may be outstanding at once: concurrency
// when going as fast as possible; at a fixed rate, four times that, room
// for a burst while the node lags.
func maxInFlight(rate float64, concurrency int) int {
	if rate > 0 {
		return concurrency * 4
	}
	return concurrency
}

func newPublisher(o options, sessions int) *publisher {
	// The client keeps as many connections idle as may be in flight: with
	// fewer, each burst opens connections that are closed right after, and
	// the node pays an accept, a new connection's buffers and a close per
	// burst, which a steady client never causes.
	conns := maxInFlight(o.rate, o.concurrency)
	return &publisher{
		hc:      &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxIdleConns: conns}},
		url:     strings.TrimSuffix(o.url, "/") + "/v1/gateway/events",
		apiKey:  o.apiKey,
		pad:     strings.Repeat("x", max(o.messageBytes-40, 0)),
		perSess: make([]atomic.Int64, sessions),
	}
}

// close closes the client's idle connections; a scenario calls it when its
// submits are done (run has returned, so every connection is idle). Without
// it the connections, and a goroutine or two each, would outlive the
// scenario: until the node closes them, or for the rest of the process.
func (p *publisher) close() { p.hc.CloseIdleConnections() }

func (p *publisher) submit(session int, name string) {
	idx := p.next.Add(1) - 1
	body := fmt.Sprintf(`{"sender_id":"bench-publisher","sender_type":"ai","event_type":"message","session_id":%q,"message":"t=%d;i=%d;%s"}`,
		name, time.Now().UnixNano(), idx, p.pad)
	req, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if p.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.apiKey)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		p.errors.Add(1)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		p.errors.Add(1)
		return
	}
	p.sent.Add(1)
	p.perSess[session].Add(1)
}

// run submits for d, at rate per second or as fast as concurrency allows,
// choosing the session with pick.
func (p *publisher) run(d time.Duration, rate float64, concurrency int, pick func(n int64) (int, string)) {
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	if rate > 0 {
		interval := time.Duration(float64(time.Second) / rate)
		sem := make(chan struct{}, maxInFlight(rate, concurrency))
		start := time.Now()
		for k := int64(0); time.Now().Before(deadline); k++ {
			s, name := pick(k)
			sem <- struct{}{}
			wg.Add(1)
			go func() { defer wg.Done(); p.submit(s, name); <-sem }()
			// pace against the schedule, not the previous send
			if wait := time.Until(start.Add(time.Duration(k+1) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
	} else {
		for range concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := int64(0); time.Now().Before(deadline); k++ {
					s, name := pick(k)
					p.submit(s, name)
				}
			}()
		}
	}
	wg.Wait()
}
