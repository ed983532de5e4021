package ws

import (
	"net/http"

	"github.com/coder/websocket"
)

// AttachRequest is a validated WebSocket attach.
type AttachRequest struct {
	Identity
	Sessions   []string
	ResumeFrom *uint64 // nil: start after the last event written to an earlier connection
	Batch      bool    // the client takes several newline-separated frames per message
	// CredentialKey groups connections for MaxConnectionsPerCredential
	// (never the secret itself); empty: the connection is not counted
	// against any credential.
	CredentialKey string
}

// Attach upgrades the request and starts serving the connection. It returns
// before upgrading with ErrDraining, ErrTooManyConnections,
// ErrTooManyParticipantConnections, ErrTooManyCredentialConnections or
// ErrParticipantMoved, and otherwise once the connection is served by its
// own goroutine, so that the HTTP server's goroutine and request are not
// held for the connection's life. Shutdown waits for the connection to end.
func (h *Hub) Attach(w http.ResponseWriter, r *http.Request, req AttachRequest, opts *websocket.AcceptOptions, maxConns int) error {
	if err := h.admit(req, maxConns); err != nil {
		return err
	}
	if p := h.Lookup(req.ParticipantID); p != nil && !p.awaitTakeover(r.Context()) {
		h.unadmit(req)
		return ErrParticipantMoved
	}
	c := &conn{writer: writer{cfg: &h.cfg, batch: req.Batch, held: true},
		hub: h, who: req.Identity, credKey: req.CredentialKey}
	hj := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hj, r, c.listening(opts))
	if err != nil {
		h.unadmit(req)
		return err // Accept has answered the client
	}
	ws.SetReadLimit(h.cfg.MaxFrameBytes)
	c.ws, c.raw = ws, hj.conn
	c.heard() // the upgrade: the keepalive's first ping is due an interval from now
	c.start(req)

	h.connMu.Lock()
	h.upgrading--
	h.conns[c] = struct{}{}
	draining := h.draining
	h.connMu.Unlock()
	h.cfg.Metrics.Connections.Inc()
	if draining { // Shutdown began while we upgraded and did not see c
		c.requestClose(closeGoingAway)
	}
	if h.cfg.BeforeWelcome != nil {
		h.cfg.BeforeWelcome(r.Context())
	}
	c.release()
	go c.serve()
	return nil
}

// forget drops c from the hub's connections and gives back its slot.
func (h *Hub) forget(c *conn) {
	h.connMu.Lock()
	delete(h.conns, c)
	h.releaseLocked(c.who.ParticipantID, c.credKey)
	h.connMu.Unlock()
}

// admit takes a connection slot for req, or says why there is none: the
// node is draining, holds maxConns connections (0: no bound), or req's
// participant or credential holds its maximum. The counts are checked and
// taken under one lock, so two attaches cannot both take the last slot.
// The slot is given back by releaseLocked when the connection ends.
func (h *Hub) admit(req AttachRequest, maxConns int) error {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	perParticipant, perCredential := h.cfg.MaxConnectionsPerParticipant, h.cfg.MaxConnectionsPerCredential
	switch {
	case h.draining:
		return ErrDraining
	case maxConns > 0 && len(h.conns)+h.upgrading >= maxConns:
		return ErrTooManyConnections
	case perParticipant > 0 && h.participantConns[req.ParticipantID] >= perParticipant:
		return ErrTooManyParticipantConnections
	case perCredential > 0 && req.CredentialKey != "" && h.credentialConns[req.CredentialKey] >= perCredential:
		return ErrTooManyCredentialConnections
	}
	h.upgrading++ // holds a slot; Shutdown only sees connections once started
	h.participantConns[req.ParticipantID]++
	if req.CredentialKey != "" {
		h.credentialConns[req.CredentialKey]++
	}
	h.connWG.Add(1)
	return nil
}

// unadmit gives back the slot admit took for req, for an attach that did
// not start a connection.
func (h *Hub) unadmit(req AttachRequest) {
	h.connMu.Lock()
	h.upgrading--
	h.releaseLocked(req.ParticipantID, req.CredentialKey)
	h.connMu.Unlock()
	h.connWG.Done()
}

// releaseLocked gives back the participant's and the credential's share of
// a slot admit took; counts that reach zero are deleted, so the maps hold
// only keys with a connection (at most maxConns of each). connMu is held.
func (h *Hub) releaseLocked(participant, credential string) {
	if h.participantConns[participant]--; h.participantConns[participant] <= 0 {
		delete(h.participantConns, participant)
	}
	if credential == "" {
		return
	}
	if h.credentialConns[credential]--; h.credentialConns[credential] <= 0 {
		delete(h.credentialConns, credential)
	}
}

// start binds c to its participant, positions its writer's cursor (after
// the last event written, or at ResumeFrom) and queues the welcome frame.
func (c *conn) start(req AttachRequest) {
	h := c.hub
	for {
		p, _ := h.getOrCreate(req.ParticipantID, req.ParticipantType)
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			continue
		}
		var joinErr error
		for _, s := range req.Sessions {
			if err := h.joinLocked(p, s); err != nil {
				joinErr = err
			}
		}
		newest := p.box.newest()
		start := p.lastWritten + 1
		if req.ResumeFrom != nil {
			start = min(*req.ResumeFrom, newest) + 1
		}
		// The backlog a connection starts with is not "falling behind":
		// only bytes accepted after it started count against its write
		// queue, so a client resuming from far back is not cut at once.
		c.p, c.next, c.sentCum = p, start, p.box.total
		c.ctrl = append(c.ctrl, mustJSON(welcomeFrame{
			Type: "welcome", ParticipantID: p.id, Node: h.cfg.Node,
			Sessions: p.sortedSessionsLocked(), Seq: newest, Resumed: start <= newest,
		}))
		if joinErr != nil {
			c.ctrl = append(c.ctrl, mustJSON(errorFrame{Type: "error", Code: "too_many_sessions",
				Detail: "some sessions were not joined: " + joinErr.Error()}))
		}
		p.conns = append(p.conns, c)
		h.announceLocked(p)
		p.mu.Unlock()
		return
	}
}

// detach unbinds c from its participant; the participant's offline window
// starts when its last connection goes.
func (h *Hub) detach(c *conn) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	if len(p.conns) == 0 {
		p.offlineSince = h.cfg.Now()
	}
	h.announceLocked(p)
}
