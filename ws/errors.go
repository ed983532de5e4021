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
	// ErrParticipantMoved: the attach waited for a takeover of its
	// participant that ended without it (it lives on another node).
	ErrParticipantMoved = errors.New("participant moving")
	// ErrTooManySessions: the participant is in its maximum of sessions.
	ErrTooManySessions = errors.New("too many sessions for one participant")
)
