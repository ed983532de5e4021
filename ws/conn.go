package ws

// Identity is who a connection speaks for.
type Identity struct {
	ParticipantID   string
	ParticipantType string
	// Credential is what authenticated the connection, opaque to this
	// package; the Backend uses it to decide what the connection may do.
	Credential any
	// RateKey names the connection's credential for the Backend's rate
	// limit (never the secret itself), computed at attach; opaque to this
	// package.
	RateKey string
}

// conn is one WebSocket connection of a participant: a reader (reader.go)
// that turns client frames into actions, a writer (writer.go) that sends
// what is queued for it, and what the keepalive knows of it
// (keepalive.go). Attach (attach.go) starts it.
//
// A connection has one reader goroutine for its whole life and a writer
// goroutine only while it has something to write.
type conn struct {
	writer    // the sending side; its p is the connection's participant
	keepalive // when the client was last heard from, and pinged

	hub *Hub
	who Identity

	credKey string // AttachRequest.CredentialKey: the count admit took a share of
}

// serve is the connection's reader goroutine; when the client goes, it
// stops the writer, unbinds the connection and gives back its slot.
func (c *conn) serve() {
	h := c.hub
	defer h.connWG.Done()
	c.readLoop()
	c.stopWriter()
	h.detach(c)
	h.forget(c)
	h.cfg.Metrics.Connections.Dec()
}
