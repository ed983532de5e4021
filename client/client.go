package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Config says whom to attach as and where. A zero field takes the default
// in its comment.
type Config struct {
	// URLs are the base URLs of nodes (http:// or https://); each
	// reconnect tries the next one, so a draining node's clients move on.
	// Required.
	URLs []string
	// Credential is sent as "Authorization: Bearer <credential>" (an API key
	// or a participant token). Optional.
	Credential string
	// ParticipantID is who attaches. Required.
	ParticipantID string
	// ParticipantType is "human" or "ai". Default "ai".
	ParticipantType string
	// Sessions are joined on every attach.
	Sessions []string
	// ResumeFrom, when set, is the last seq the caller already has (from an
	// earlier run); the first attach replays what came after it. Later
	// attaches always resume from the last seq received.
	ResumeFrom *uint64
	// Batch lets the node pack several frames into one message.
	Batch bool
	// Ack sends a cumulative ack after each message with events, so the
	// node may free what was received.
	Ack bool
	// MinBackoff and MaxBackoff bound the wait between reconnects; each
	// wait is a random time up to the current bound, which doubles from
	// MinBackoff to MaxBackoff (full jitter). Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient dials the WebSocket. Default http.DefaultClient.
	HTTPClient *http.Client
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
}

// Frame is one frame from the node.
type Frame struct {
	Type string `json:"type"`
	// event frames
	Seq       uint64          `json:"seq"`
	EventID   string          `json:"event_id"`
	SessionID string          `json:"session_id"`
	Event     json.RawMessage `json:"event"`
	// gap frames
	FromSeq uint64 `json:"from_seq"`
	ToSeq   uint64 `json:"to_seq"`
	// welcome frames
	ParticipantID string   `json:"participant_id"`
	Node          string   `json:"node"`
	Sessions      []string `json:"sessions"`
	Resumed       bool     `json:"resumed"`
	// result and error frames
	ID     string          `json:"id"`
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
	Code   string          `json:"code"`
	Detail string          `json:"detail"`
	// Raw is the frame as received.
	Raw []byte `json:"-"`
}

// Result is the answer to a Submit: the status and body the REST call
// would give.
type Result struct {
	Status int
	Body   json.RawMessage
}

// ErrClosed is returned by Submit when the connection closed before the
// answer came; the event may or may not have been accepted, so submit it
// again with the same event_id (the node delivers it once).
var ErrClosed = errors.New("client: the connection closed before the answer")

// PermanentError is a refusal that reconnecting cannot fix: a bad
// credential or request (HTTP 4xx at attach) or a policy close (1008).
type PermanentError struct{ Reason string }

func (e *PermanentError) Error() string { return "client: " + e.Reason }

// Client is a participant's connection to Switchyard that survives drops:
// it reconnects with backoff and jitter, resumes from the last seq it
// received, and hands frames to the caller's handler in order.
type Client struct {
	cfg     Config
	log     *slog.Logger
	lastSeq atomic.Uint64
	nextID  atomic.Uint64

	mu      sync.Mutex
	conn    *websocket.Conn
	waiters map[string]chan Frame
}

// New checks cfg and makes a client; Run connects it.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("client: at least one node URL is required")
	}
	if cfg.ParticipantID == "" {
		return nil, errors.New("client: ParticipantID is required")
	}
	if cfg.ParticipantType == "" {
		cfg.ParticipantType = "ai"
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, waiters: map[string]chan Frame{}}
	if cfg.ResumeFrom != nil {
		c.lastSeq.Store(*cfg.ResumeFrom)
	}
	return c, nil
}

// LastSeq is the seq of the last event handed to the handler (or the
// configured ResumeFrom).
func (c *Client) LastSeq() uint64 { return c.lastSeq.Load() }

// Run attaches and hands every frame to handle, in order, reconnecting
// whenever the connection drops, until ctx ends (it returns nil), handle
// returns an error (returned), or the node refuses for good
// (*PermanentError). Event frames already received are never handed over
// twice: after a reconnect the node replays from the last seq.
func (c *Client) Run(ctx context.Context, handle func(Frame) error) error {
	backoff := c.cfg.MinBackoff
	resume := c.cfg.ResumeFrom != nil
	for attempt := 0; ; attempt++ {
		url := c.cfg.URLs[attempt%len(c.cfg.URLs)]
		connected, err := c.session(ctx, url, resume, handle)
		if ctx.Err() != nil {
			return nil
		}
		var perm *PermanentError
		var herr handlerError
		switch {
		case errors.As(err, &perm):
			return err
		case errors.As(err, &herr):
			return herr.err
		}
		if connected {
			backoff = c.cfg.MinBackoff // it worked for a while: start over
		}
		resume = resume || c.lastSeq.Load() > 0
		wait := time.Duration(rand.Int64N(int64(backoff) + 1))
		next := c.cfg.URLs[(attempt+1)%len(c.cfg.URLs)]
		if connected {
			c.log.Debug("connection lost; reconnecting", "url", url, "err", err, "next", next, "in", wait.Round(time.Millisecond))
		} else {
			c.log.Debug("cannot attach; retrying", "url", url, "err", err, "next", next, "in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

type handlerError struct{ err error }

func (h handlerError) Error() string { return h.err.Error() }

// session runs one connection; connected reports whether it got as far as
// the welcome frame.
func (c *Client) session(ctx context.Context, base string, resume bool, handle func(Frame) error) (connected bool, err error) {
	u, err := c.attachURL(base, resume)
	if err != nil {
		return false, &PermanentError{Reason: err.Error()}
	}
	header := http.Header{}
	if c.cfg.Credential != "" {
		header.Set("Authorization", "Bearer "+c.cfg.Credential)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: c.cfg.HTTPClient, HTTPHeader: header})
	cancel()
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
				return false, &PermanentError{Reason: fmt.Sprintf("attach refused (%d): %s", resp.StatusCode, bytes.TrimSpace(body))}
			}
		}
		return false, err
	}
	conn.SetReadLimit(-1)
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		for id, w := range c.waiters { // answers that will never come
			close(w)
			delete(c.waiters, id)
		}
		c.mu.Unlock()
		_ = conn.CloseNow()
	}()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close(websocket.StatusNormalClosure, "") })
	defer stop()

	for {
		_, data, err := conn.Read(context.Background()) // the AfterFunc closes it on ctx
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
				return connected, &PermanentError{Reason: "the node closed the connection by policy (1008): " + err.Error()}
			}
			return connected, err
		}
		maxSeq := uint64(0)
		for _, raw := range bytes.Split(data, []byte("\n")) {
			var f Frame
			if err := json.Unmarshal(raw, &f); err != nil {
				c.log.Warn("a frame does not decode; skipped", "err", err)
				continue
			}
			f.Raw = raw
			switch f.Type {
			case "welcome":
				connected = true
				if f.Seq < c.lastSeq.Load() {
					// The node's numbering for this participant restarted (its
					// mailbox could not be had): events from now on are new.
					c.lastSeq.Store(f.Seq)
				}
			case "event":
				if f.Seq <= c.lastSeq.Load() && resume {
					continue // replayed twice (a race at reconnect): already handled
				}
				c.lastSeq.Store(f.Seq)
				maxSeq = f.Seq
			case "gap":
				c.lastSeq.Store(max(c.lastSeq.Load(), f.ToSeq))
			case "result":
				c.mu.Lock()
				w := c.waiters[f.ID]
				delete(c.waiters, f.ID)
				c.mu.Unlock()
				if w != nil {
					w <- f
					close(w)
					continue
				}
			}
			if err := handle(f); err != nil {
				return connected, handlerError{err}
			}
			resume = true
		}
		if c.cfg.Ack && maxSeq > 0 {
			ack, _ := json.Marshal(map[string]any{"type": "ack", "seq": maxSeq})
			_ = c.write(ctx, conn, ack)
		}
	}
}

func (c *Client) attachURL(base string, resume bool) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/v1/gateway/ws")
	if err != nil {
		return "", fmt.Errorf("node URL %q: %w", base, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("node URL %q: want http or https", base)
	}
	q := url.Values{"participant_id": {c.cfg.ParticipantID}, "participant_type": {c.cfg.ParticipantType},
		"session_id": c.cfg.Sessions}
	if resume {
		q.Set("resume_from", strconv.FormatUint(c.lastSeq.Load(), 10))
	}
	if c.cfg.Batch {
		q.Set("batch", "1")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (c *Client) write(ctx context.Context, conn *websocket.Conn, frame []byte) error {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return conn.Write(wctx, websocket.MessageText, frame)
}

// Submit sends an event over the current connection (sender_id and
// sender_type default to this participant) and waits for the node's
// answer. event is anything that encodes to a JSON object. It fails with
// ErrClosed when the connection drops first: submit again with the same
// event_id, which the node delivers once.
func (c *Client) Submit(ctx context.Context, event any) (Result, error) {
	id := "c" + strconv.FormatUint(c.nextID.Add(1), 10)
	frame, err := json.Marshal(map[string]any{"type": "submit", "id": id, "event": event})
	if err != nil {
		return Result{}, fmt.Errorf("client: encode event: %w", err)
	}
	wait := make(chan Frame, 1)
	c.mu.Lock()
	conn := c.conn
	if conn == nil {
		c.mu.Unlock()
		return Result{}, ErrClosed
	}
	c.waiters[id] = wait
	c.mu.Unlock()
	if err := c.write(ctx, conn, frame); err != nil {
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
		return Result{}, ErrClosed
	}
	select {
	case f, ok := <-wait:
		if !ok {
			return Result{}, ErrClosed
		}
		return Result{Status: f.Status, Body: f.Body}, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
		return Result{}, ctx.Err()
	}
}
