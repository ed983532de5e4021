package ws

import "errors"

var (
	// ErrDraining: the node is shutting down and takes no new connections.
	ErrDraining = errors.New("node is draining")
	// ErrTooManyConnections: the node holds its maximum of connections.
	ErrTooManyConnections = errors.New("too many connections")
	// ErrTooManyParticipantConnections: the participant holds its maximum
	// of connections on this node (Config.MaxConnectionsPerParticipant).
	ErrTooManyParticipantConnections = errors.New("too many connections for one participant")
	// ErrTooManyCredentialConnections: the credential holds its maximum of
	// connections on this node (Config.MaxConnectionsPerCredential).
	ErrTooManyCredentialConnections = errors.New("too many connections for one credential")
	// ErrTooManySessions: the participant is in its maximum of sessions.
	ErrTooManySessions = errors.New("too many sessions for one participant")
)
