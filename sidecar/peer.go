package sidecar

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
)

// hopsHeader counts how many times a delivery has been forwarded (see
// routing.MaxHops).
const hopsHeader = "Switchyard-Hops"

// peerAnswerLimit bounds an ordinary answer from a peer or gateway (a
// delivery result, an error): small JSON. A caller that expects more (a
// released participant's state) names its own limit.
const peerAnswerLimit = 1 << 20

// peerClient posts deliveries to peers and external gateways over pooled
// keep-alive connections, retrying with backoff within a deadline. It never
// follows redirects.
type peerClient struct {
	http *http.Client
	// directory carries the directory's pushes and lookups: small requests
	// to every other node. Few of its connections per peer are kept idle
	// (directoryIdleConns): each costs goroutines and buffers on both
	// nodes, for every peer of a large cluster.
	directory      *http.Client
	attemptTimeout time.Duration
}

// The directory's idle connections to one peer: at most directoryIdleConns
// of them are kept, for directoryIdleTimeout (at N = 100, 2 instead of 1
// cost each node about 1.6 MiB more RSS). A burst opens as many as it
// needs (queueing lookups behind a few connections made them time out on a
// loaded node); past it the extra ones close.
const (
	directoryIdleConns   = 1
	directoryIdleTimeout = 30 * time.Second
)

func newPeerClient(attemptTimeout time.Duration, roots *x509.CertPool) *peerClient {
	transport := func(idlePerHost int, idle time.Duration) *http.Transport {
		return &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			Proxy:               nil, // peers are reached directly
			DialContext:         (&net.Dialer{Timeout: attemptTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: idlePerHost,
			IdleConnTimeout:     idle,
			ForceAttemptHTTP2:   false,
		}
	}
	client := func(tr *http.Transport) *http.Client {
		return &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // a redirect is an answer, never followed
			},
		}
	}
	return &peerClient{
		http:           client(transport(64, 90*time.Second)),
		directory:      client(transport(directoryIdleConns, directoryIdleTimeout)),
		attemptTimeout: attemptTimeout,
	}
}

func (pc *peerClient) close() {
	pc.http.CloseIdleConnections()
	pc.directory.CloseIdleConnections()
}

// peerAnswer is what a peer or gateway answered.
type peerAnswer struct {
	Status int
	Body   []byte
	// RetryAfter: the answer carried a Retry-After header, a deliberate
	// refusal for now (e.g. 503 mailbox_budget_exhausted) that retrying
	// within the deadline would only repeat.
	RetryAfter bool
}

// post sends body to url until it gets an answer that is not a server
// error, or ctx ends. Network errors and 5xx answers are retried with
// exponential backoff (50 ms doubling, at most 1 s), except a 5xx with
// Retry-After: the peer refused on purpose and says when to come back.
func (pc *peerClient) post(ctx context.Context, url string, body []byte, bearer string, hops int) (peerAnswer, error) {
	return pc.postUpTo(ctx, url, body, bearer, hops, peerAnswerLimit)
}

// postUpTo is post for an answer of up to limit bytes; a longer one fails
// at once with routing.ErrAnswerTooLarge.
func (pc *peerClient) postUpTo(ctx context.Context, url string, body []byte, bearer string, hops int, limit int64) (peerAnswer, error) {
	backoff := 50 * time.Millisecond
	for {
		ans, err := pc.send(ctx, http.MethodPost, url, body, bearer, hops, limit)
		if err == nil && (ans.Status < 500 || ans.RetryAfter) {
			return ans, nil
		}
		if errors.Is(err, routing.ErrAnswerTooLarge) {
			return ans, err
		}
		if err == nil {
			err = fmt.Errorf("answered %d", ans.Status)
		}
		select {
		case <-ctx.Done():
			return ans, fmt.Errorf("deliver to %s: %w (gave up: %v)", url, err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (pc *peerClient) send(ctx context.Context, method, url string, body []byte, bearer string, hops int, limit int64) (peerAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, pc.attemptTimeout)
	defer cancel()
	return pc.sendWithin(ctx, method, url, body, bearer, hops, limit)
}

// sendWithin sends one request and reads an answer of at most limit bytes.
func (pc *peerClient) sendWithin(ctx context.Context, method, url string, body []byte, bearer string, hops int, limit int64) (peerAnswer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return peerAnswer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if hops > 0 {
		req.Header.Set(hopsHeader, strconv.Itoa(hops))
	}
	if tp := wire.TraceparentFrom(ctx); tp != "" {
		req.Header.Set(traceparentHeader, tp)
	}
	resp, err := pc.http.Do(req)
	if err != nil {
		return peerAnswer{}, err
	}
	defer resp.Body.Close()
	// One byte past the limit tells a long answer from one that fits.
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return peerAnswer{}, err
	}
	if int64(len(b)) > limit {
		return peerAnswer{Status: resp.StatusCode}, fmt.Errorf("%s %s: %w (%d bytes)", method, url, routing.ErrAnswerTooLarge, limit)
	}
	return peerAnswer{Status: resp.StatusCode, Body: b, RetryAfter: resp.Header.Get("Retry-After") != ""}, nil
}

// hopsOf reads the hop count of an incoming delivery (0 when absent).
func hopsOf(r *http.Request) int {
	n, err := strconv.Atoi(r.Header.Get(hopsHeader))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// deliveriesURL is a gateway's deliveries endpoint.
func deliveriesURL(base string) string {
	return strings.TrimSuffix(base, "/") + "/v1/gateway/deliveries"
}

// pathEscape escapes an id as one URL path segment.
func pathEscape(s string) string { return url.PathEscape(s) }
