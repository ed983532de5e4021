package ws

import "errors"

var (
	// ErrDraining: the node is shutting down and takes no new connections.
	ErrDraining = errors.New("node is draining")
	// ErrTooManyConnections: the node holds its maximum of connections.
	ErrTooManyConnections = errors.New("too many connections")
	// ErrTooManySessions: the participant is in its maximum of sessions.
	ErrTooManySessions = errors.New("too many sessions for one participant")
)
