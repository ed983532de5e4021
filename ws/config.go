package ws

import (
	"context"
	"log/slog"
	"math"
	"time"
)

// Config tunes a Hub. A zero field takes the default given in its comment.
type Config struct {
	// Node is this node's name, sent in welcome frames.
	Node string
	// MailboxSize is how many recent events each participant's mailbox
	// keeps for resumption (--mailbox-size). Default 1024.
	MailboxSize int
	// MailboxTTL is how long an event stays in a mailbox (--mailbox-ttl).
	// Default 5m.
	MailboxTTL time.Duration
	// OfflineTTL is how long a participant with no connection stays
	// routable, its events kept for its return (--offline-ttl). Default 2m.
	OfflineTTL time.Duration
	// MaxMailboxBytes is the node-wide budget of bytes all mailboxes may
	// hold (--max-mailbox-bytes): an event is counted once however many
	// mailboxes share it, plus each mailbox's slots. Past it Reserve
	// refuses new events; what is held stays. Default 256 MiB; negative:
	// no budget.
	MaxMailboxBytes int64
	// DedupeWindow is how long a participant's mailbox remembers the
	// (sender_id, event_id) of events it took, so that a retry is not
	// delivered twice (--dedupe-window). Default 10m.
	DedupeWindow time.Duration
	// DedupeSize bounds the keys remembered per participant (the oldest
	// are forgotten first). Default: MailboxSize.
	DedupeSize int
	// WriteQueueBytes bounds a connection's backlog: event bytes accepted for
	// it and not yet handed to its socket. Past it the connection is closed
	// with 4000 (slow consumer). Default 4 MiB.
	WriteQueueBytes int
	// MaxControlFrames bounds the queued result and error frames of one
	// connection; past it the connection is closed with 4000. Default 256.
	MaxControlFrames int
	// WriteTimeout is the deadline of one socket write; a connection that
	// cannot take a write within it is dropped (checked every SweepInterval).
	// Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how long a connection may be quiet (no frame from
	// its client) before the node pings it (--ping-interval). Default 30s:
	// under the 60s idle timeout of common load balancers and proxies, so
	// the pings also keep an idle connection through them open.
	PingInterval time.Duration
	// PingTimeout is how long a ping may go unanswered (no pong nor any
	// other frame) before the connection is dropped as gone, freeing its
	// connection slots (--ping-timeout). Checked every SweepInterval.
	// Default 10s, as WriteTimeout: a client is given as long to answer
	// as it is to take a write.
	PingTimeout time.Duration
	// MaxFrameBytes is the largest client frame read; a larger one closes the
	// connection with 1009. Default 1 MiB + 64 KiB (room for a submit frame
	// carrying a maximal event).
	MaxFrameBytes int64
	// MaxBatchBytes bounds one WebSocket message built from several frames
	// for a batch=1 connection (and the frames one write-loop pass takes).
	// Default 64 KiB.
	MaxBatchBytes int
	// CoalesceWindow is how long a connection's writer, woken from idle,
	// waits before it collects what to write, so that events arriving
	// within the window leave in one write (one WebSocket message with
	// batch=1). It trades that much latency for fewer system calls under a
	// steady stream (--coalesce-window). Default 0: write at once.
	CoalesceWindow time.Duration
	// MaxSessionsPerParticipant bounds the sessions one participant joins.
	// Default 10,000.
	MaxSessionsPerParticipant int
	// MaxConnectionsPerParticipant bounds the connections one participant
	// holds on this node at once (ErrTooManyParticipantConnections past
	// it). Default 8.
	MaxConnectionsPerParticipant int
	// MaxConnectionsPerCredential bounds the connections attached with one
	// credential (AttachRequest.CredentialKey) at once
	// (ErrTooManyCredentialConnections past it). Default 0: no bound; the
	// sidecar sets it.
	MaxConnectionsPerCredential int
	// SweepInterval is how often mailboxes are expired and offline
	// participants removed. Default 1s.
	SweepInterval time.Duration
	// Backend answers the frames that need the gateway core. Required.
	Backend Backend
	// Listener hears of every change to local participants (the directory
	// that gossips them). Optional.
	Listener Listener
	// DrainSpread spreads the 1001 closes of a drain over this time, so that
	// clients do not all reconnect at once. Default 0: all at once.
	DrainSpread time.Duration
	// BeforeWelcome, when set, runs after a new connection's participant is
	// registered and before its welcome frame is sent; the cluster uses it
	// to let peers learn of the participant first. Optional.
	BeforeWelcome func(ctx context.Context)
	// Metrics receives the hub's counters. Optional.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
}

// DefaultMaxMailboxBytes is the default of MaxMailboxBytes: half of the
// 512 MiB memory limit of the manifests in deploy/.
const DefaultMaxMailboxBytes = 256 << 20

func (c Config) withDefaults() Config {
	if c.MailboxSize <= 0 {
		c.MailboxSize = 1024
	}
	if c.MailboxTTL <= 0 {
		c.MailboxTTL = 5 * time.Minute
	}
	if c.OfflineTTL <= 0 {
		c.OfflineTTL = 2 * time.Minute
	}
	switch {
	case c.MaxMailboxBytes == 0:
		c.MaxMailboxBytes = DefaultMaxMailboxBytes
	case c.MaxMailboxBytes < 0:
		c.MaxMailboxBytes = math.MaxInt64
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = 10 * time.Minute
	}
	if c.DedupeSize <= 0 {
		c.DedupeSize = c.MailboxSize
	}
	if c.WriteQueueBytes <= 0 {
		c.WriteQueueBytes = 4 << 20
	}
	if c.MaxControlFrames <= 0 {
		c.MaxControlFrames = 256
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 10 * time.Second
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 1<<20 + 64<<10
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 64 << 10
	}
	if c.MaxSessionsPerParticipant <= 0 {
		c.MaxSessionsPerParticipant = 10000
	}
	if c.MaxConnectionsPerParticipant <= 0 {
		c.MaxConnectionsPerParticipant = 8
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	return c
}
