package sidecar

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/jsonw"
	"github.com/switchyard-gw/switchyard/internal/wire"
)

// Observers are read-only WebSocket attaches (GET /v1/gateway/ws with
// observe=1, API keys only) that receive a copy of every session event
// passing through this node: submitted here, or delivered to participants
// homed here. An observer is no participant: it is in no directory, no
// session lists it, no submit counts it, and nobody can address it. The web
// console (--ui) watches sessions this way.

// observerBuffer is how many events an observer may fall behind before it
// is closed with 4000 (slow consumer); publishing never blocks.
const observerBuffer = 256

type observer struct {
	sessions []string
	ch       chan []byte   // frames to write
	slow     chan struct{} // closed when the buffer overflowed
	dropped  bool          // guarded by observers.mu
}

type observers struct {
	mu        sync.Mutex
	max       int
	count     int
	closed    bool
	bySession map[string]map[*observer]struct{}
	done      chan struct{} // closed by closeAll: observers end with 1001
	idle      chan struct{} // closed once closeAll was called and every observer is gone
}

func newObservers(max int) *observers {
	return &observers{max: max, bySession: map[string]map[*observer]struct{}{},
		done: make(chan struct{}), idle: make(chan struct{})}
}

// add registers an observer of sessions; false when the node holds its
// maximum of observers or is draining.
func (obs *observers) add(sessions []string) (*observer, bool) {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.closed || obs.count >= obs.max {
		return nil, false
	}
	o := &observer{sessions: sessions, ch: make(chan []byte, observerBuffer), slow: make(chan struct{})}
	for _, s := range sessions {
		m := obs.bySession[s]
		if m == nil {
			m = map[*observer]struct{}{}
			obs.bySession[s] = m
		}
		m[o] = struct{}{}
	}
	obs.count++
	return o, true
}

func (obs *observers) remove(o *observer) {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	obs.removeLocked(o)
}

func (obs *observers) removeLocked(o *observer) {
	for _, s := range o.sessions {
		m := obs.bySession[s]
		if _, ok := m[o]; !ok {
			return // removed already
		}
		delete(m, o)
		if len(m) == 0 {
			delete(obs.bySession, s)
		}
	}
	obs.count--
	if obs.closed && obs.count == 0 {
		close(obs.idle)
	}
}

// publish hands an event of session (its JSON, eventJSON) to the session's
// observers; one that cannot take it is dropped and closed with 4000.
func (obs *observers) publish(session, eventID string, eventJSON []byte) {
	if obs == nil || session == "" {
		return
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	m := obs.bySession[session]
	if len(m) == 0 {
		return
	}
	frame := make([]byte, 0, len(eventJSON)+len(session)+len(eventID)+64)
	frame = append(frame, `{"type":"event","session_id":`...)
	frame = jsonw.AppendString(frame, session)
	frame = append(frame, `,"event_id":`...)
	frame = jsonw.AppendString(frame, eventID)
	frame = append(frame, `,"event":`...)
	frame = append(frame, eventJSON...)
	frame = append(frame, '}')
	for o := range m {
		select {
		case o.ch <- frame:
		default:
			if !o.dropped {
				o.dropped = true
				close(o.slow)
			}
		}
	}
}

// closeAll ends every observer (with 1001) and refuses new ones: the node
// is draining.
func (obs *observers) closeAll() {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !obs.closed {
		obs.closed = true
		close(obs.done)
		if obs.count == 0 {
			close(obs.idle)
		}
	}
}

// wait waits, after closeAll, until every observer's handler is done (its
// connection closed), or ctx ends.
func (obs *observers) wait(ctx context.Context) error {
	select {
	case <-obs.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleObserve serves an observe=1 attach: a welcome frame, then one
// event frame per session event that passes through this node. An
// observer sends nothing: a data frame from it closes it with 1008.
func (n *Node) handleObserve(w http.ResponseWriter, r *http.Request) error {
	cred := credentialFrom(r.Context())
	if err := cred.fullRights(); err != nil {
		return err
	}
	q := r.URL.Query()
	sessions := q["session_id"]
	if len(sessions) == 0 {
		return wire.FieldError(wire.CodeMissingField, "session_id", "observe=1 needs at least one session_id to watch")
	}
	if len(sessions) > n.cfg.MaxSessionsPerParticipant {
		return wire.FieldError("too_many_sessions", "session_id", "an observer watches at most --max-sessions-per-participant sessions")
	}
	for _, s := range sessions {
		if err := wire.CheckID(s, "session_id", ident.MaxSessionID); err != nil {
			return err
		}
	}
	if n.draining.Load() {
		return wire.NewError(http.StatusServiceUnavailable, "draining", "", "this node is shutting down; attach to another node")
	}
	o, ok := n.watchers.add(sessions)
	if !ok {
		return wire.NewError(http.StatusServiceUnavailable, "too_many_observers", "",
			"this node holds its maximum of observers (--max-observers); close one first")
	}
	defer n.watchers.remove(o)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		CompressionMode: websocket.CompressionDisabled, OriginPatterns: n.cfg.AllowedOrigins})
	if err != nil {
		return nil // Accept answered
	}
	// One reader: it ends when the client closes or the connection fails
	// (false), or at the first data message, which an observer may not
	// send (true). This handler alone closes the connection.
	readCtx, stopRead := context.WithCancel(context.Background())
	readEnd := make(chan bool, 1)
	go func() {
		_, _, err := c.Read(readCtx)
		readEnd <- err == nil
	}()
	readDone := false
	stopPings := n.keepObserverAlive(c)
	defer func() {
		stopPings()
		stopRead()
		_ = c.CloseNow()
		if !readDone {
			<-readEnd
		}
	}()
	welcome := jsonw.AppendString([]byte(`{"type":"welcome","observer":true,"node":`), n.cfg.NodeName)
	welcome = append(welcome, `,"sessions":[`...)
	for i, s := range sessions {
		if i > 0 {
			welcome = append(welcome, ',')
		}
		welcome = jsonw.AppendString(welcome, s)
	}
	welcome = append(welcome, "]}"...)
	if n.writeObserved(c, welcome) != nil {
		return nil
	}
	for {
		select {
		case data := <-readEnd:
			readDone = true
			if data {
				_ = c.Close(websocket.StatusPolicyViolation, "an observer sends nothing")
			}
			return nil
		case <-n.watchers.done:
			_ = c.Close(websocket.StatusGoingAway, "node draining")
			return nil
		case <-o.slow:
			_ = c.Close(websocket.StatusCode(4000), "slow consumer")
			return nil
		case frame := <-o.ch:
			if n.writeObserved(c, frame) != nil {
				return nil
			}
		}
	}
}

func (n *Node) writeObserved(c *websocket.Conn, frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.WriteTimeout)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, frame)
}

// keepObserverAlive pings c every --ping-interval and cuts it (CloseNow,
// which ends the handler's reader and so the handler) when a ping goes
// unanswered for --ping-timeout: a half-open observer would otherwise hold
// one of the --max-observers places for good, as it never sends anything
// and a write into a dead peer's socket buffer can succeed for a long time.
// Participants' connections are kept alive by the hub's sweeper
// (ws/keepalive.go); an observer is not in the hub, and there are at most
// --max-observers of them, so each has its own pinger. coder/websocket's
// Ping needs a concurrent reader: the handler's reader is one. The returned
// stop ends the pinger and waits for it.
func (n *Node) keepObserverAlive(c *websocket.Conn) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(n.cfg.PingInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pingCtx, pingCancel := context.WithTimeout(ctx, n.cfg.PingTimeout)
			err := c.Ping(pingCtx)
			pingCancel()
			if err != nil {
				if ctx.Err() == nil {
					n.metrics.Hub.PingTimeouts.Inc()
					_ = c.CloseNow()
				}
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}
