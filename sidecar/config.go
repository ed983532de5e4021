package sidecar

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// Config is a node's configuration: the serve flags of SPEC section 7. A zero
// field takes the default in its comment. New copies it; the caller's value
// is never changed.
type Config struct {
	// Listen is the HTTP listen address. Default 127.0.0.1:8787.
	Listen string
	// AdvertiseURL is the URL peers and clients reach this node at. Default
	// http://<the address the listener got>.
	AdvertiseURL string
	// NodeName names this node in the cluster. Default: the host name plus
	// a short random suffix.
	NodeName string
	// APIKeys are the accepted API keys. Empty: no authentication, which
	// only a loopback Listen allows unless Insecure is set.
	APIKeys []string
	// Insecure allows serving a non-loopback address without API keys.
	Insecure bool
	// TokenSecret verifies participant tokens (HS256 JWTs) when set
	// (--token-secret). Empty: only API keys are accepted.
	TokenSecret []byte
	// TokenLeeway is the clock skew allowed on a token's exp and nbf.
	// Default 30s.
	TokenLeeway time.Duration
	// RateLimit is the requests per second one credential may make to the
	// client endpoints (submit, attach, session changes), WebSocket submit,
	// join and leave frames included; 429 past it (--rate-limit). Default
	// 10000; negative: no limit.
	RateLimit float64
	// RateBurst is the bucket size of the rate limit. Default 2×RateLimit.
	RateBurst int
	// AllowedOrigins are the Origin host patterns a browser's WebSocket may
	// come from (--allowed-origins), as coder/websocket matches them
	// (path.Match on the host, e.g. "*.example.com"). Empty: same origin
	// only.
	AllowedOrigins []string

	// MaxBodyBytes bounds a request body (413 past it). Default 1 MiB.
	MaxBodyBytes int64
	// MaxMessageBytes bounds an event's message (422). Default 256 KiB.
	MaxMessageBytes int
	// MaxMetadataKeys bounds an event's metadata (422). Default 50.
	MaxMetadataKeys int

	// MailboxSize: events kept per participant for resumption. Default 1024.
	MailboxSize int
	// MailboxTTL: how long an event stays in a mailbox. Default 5m.
	MailboxTTL time.Duration
	// OfflineTTL: how long a detached participant stays routable. Default 2m.
	OfflineTTL time.Duration
	// DedupeWindow: how long a retried (sender_id, event_id) is recognised
	// and not delivered again. Default 10m.
	DedupeWindow time.Duration
	// MaxMailboxBytes: the bytes all mailboxes on this node may hold (an
	// event counted once however many mailboxes share it); past it new
	// events for participants here are refused with 503
	// mailbox_budget_exhausted (--max-mailbox-bytes). Default 256 MiB, half
	// the manifests' 512 MiB memory limit; negative: no budget.
	MaxMailboxBytes int64
	// WriteQueueBytes: a connection's backlog bound before close 4000.
	// Default 4 MiB.
	WriteQueueBytes int
	// WriteTimeout: deadline of one WebSocket write. Default 10s.
	WriteTimeout time.Duration
	// PingInterval: how long a WebSocket connection may be quiet before
	// the node pings it. Default 30s (ws.Config.PingInterval says why).
	PingInterval time.Duration
	// PingTimeout: how long a ping may go unanswered before the
	// connection is dropped and its connection slots freed. Default 10s.
	PingTimeout time.Duration
	// CoalesceWindow: how long a woken connection writer waits so that
	// events arriving meanwhile share one write. Default 0 (off).
	CoalesceWindow time.Duration
	// MaxBatchBytes bounds one WebSocket message joining several frames
	// (batch=1), and what one write to a connection carries. Default 64 KiB.
	MaxBatchBytes int
	// MaxFrameBytes: the largest client WebSocket frame (close 1009 past
	// it). Default MaxBodyBytes + 64 KiB.
	MaxFrameBytes int64
	// MaxSessionsPerParticipant bounds the sessions one participant joins
	// (422 too_many_sessions past it). Default 10,000 (about 150 bytes of
	// directory records per membership, spread over the owners).
	MaxSessionsPerParticipant int
	// MaxConnections: WebSocket connections this node holds at most (503
	// past it). Default 100000.
	MaxConnections int
	// MaxConnectionsPerParticipant: WebSocket connections one participant
	// holds on this node at once (429 too_many_connections past it).
	// Default 8: a person's tabs and devices, plus a reconnect overlapping
	// a connection the node has not yet seen go.
	MaxConnectionsPerParticipant int
	// MaxConnectionsPerCredential: WebSocket connections attached with one
	// credential (an API key, or a participant token's subject) on this
	// node at once (429 too_many_connections past it), so that one
	// credential never takes every slot. Not applied when authentication
	// is off. Default MaxConnections/4 (at least 1).
	MaxConnectionsPerCredential int
	// MaxObservers: read-only observer attaches (observe=1, the web
	// console's live view) this node holds at once (503
	// too_many_observers past it). Default 64.
	MaxObservers int
	// UI serves the web console at /ui (--ui). Default off.
	UI bool

	// DrainTimeout bounds a graceful shutdown. Default 10s.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive HTTP connections. Default 120s.
	IdleTimeout time.Duration

	// TLSCert and TLSKey are PEM files; when both are set the listener
	// serves HTTPS (and WSS) and the default advertise URL is https://.
	TLSCert, TLSKey string
	// PeerCA is a PEM file of CA certificates trusted, besides the system's,
	// for https peers and gateways (a cluster on a private CA).
	PeerCA string

	// Gossip, when set, makes this node a member of a memberlist cluster
	// (NodeName, URL, Version and Logger are filled in by New). Nil: a
	// cluster of one node, without gossip.
	Gossip *membership.GossipConfig
	// ClusterKey is the credential of the node-to-node endpoints
	// (--cluster-key): the bearer token peers send to each other's
	// deliveries and /v1/gateway/cluster/* endpoints, which take no other
	// credential. It must not be one of the APIKeys. Default: derived from
	// the gossip key (HMAC-SHA256 of Gossip.Key with a fixed label), so
	// nodes sharing --gossip-key share it and no app holds it; without a
	// gossip key, the first API key (a logged warning: its holders can
	// speak for nodes); with neither, none (authentication is off).
	ClusterKey string
	// ExtraClusterKeys are further cluster keys accepted from peers but not
	// sent (--cluster-key repeated): for rotating an explicit cluster key
	// without downtime. None may be an API key.
	ExtraClusterKeys []string
	// ExternalKey is the bearer token sent to external gateways
	// (--external-key). Empty: none.
	ExternalKey string
	// AllowGateways are the URL prefixes sender_gateway_url and gateway_url
	// must start with to be followed (--allow-gateway); cluster members'
	// own URLs are always allowed. Empty: only members' URLs.
	AllowGateways []string
	// ForwardTimeout bounds handing one event to peers and gateways,
	// retries included (502 past it). Default 5s.
	ForwardTimeout time.Duration
	// PeerAttemptTimeout bounds one request to a peer or gateway. Default 2s.
	PeerAttemptTimeout time.Duration
	// MaxHandoffBytes bounds a participant's state as it travels between
	// nodes when it moves (the release answer, a give-back after a failed
	// transfer); past it the transfer fails and the participant stays on its
	// old home (--max-handoff-bytes). Default: what the fullest mailbox can
	// take: MailboxSize events of the largest encoding a MaxBodyBytes body
	// has, or MaxMailboxBytes of frames when that budget is set, whichever
	// is smaller (see MaxStateBytes): about 342 MiB with the defaults, so it
	// never refuses a mailbox the node accepted.
	MaxHandoffBytes int64
	// MaxExternalParticipants bounds the external participants this node
	// registers (503 too_many_external_participants past it). Default 10000.
	MaxExternalParticipants int
	// MaxExternalsPerCredential bounds the external participants one
	// credential (an API key) registers on this node, so that one client
	// cannot fill the node's cap (503 too_many_external_participants past
	// it). Default 1000.
	MaxExternalsPerCredential int
	// ExternalTTL: an external participant that neither submits with its
	// sender_gateway_url, is PUT again, nor takes a delivery for this long
	// is dropped. Default 30m.
	ExternalTTL time.Duration
	// ExternalFailureLimit: an external participant whose gateway failed
	// this many deliveries in a row is dropped from its sessions, so they
	// do not answer 502 for ever; it comes back by registering again.
	// Default 5.
	ExternalFailureLimit int
	// ExternalRetryAfter: how long a node does not route to an external
	// participant that another node registered after ExternalFailureLimit
	// failed deliveries in a row (the owner drops its own; this node cannot);
	// then one delivery probes it again. Default 1m.
	ExternalRetryAfter time.Duration

	// Version is reported in logs and node metadata.
	Version string
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// clusterKeyFrom says where ClusterKey came from (set by withDefaults).
	clusterKeyFrom string
}

// Where a node's cluster key came from.
const (
	clusterKeyExplicit  = "--cluster-key"
	clusterKeyGossip    = "derived from --gossip-key"
	clusterKeyFirstAPI  = "the first API key"
	clusterKeyDerivedAs = "switchyard cluster key v1" // the HMAC label; changing it changes every derived key
)

// clusterKeys are the cluster keys a node accepts: its own and, when it is
// derived, those derived from the extra gossip keys, so that nodes stay
// able to call each other while the gossip key rotates.
func (c Config) clusterKeys() []string {
	if c.ClusterKey == "" {
		return nil
	}
	keys := append([]string{c.ClusterKey}, c.ExtraClusterKeys...)
	if c.clusterKeyFrom == clusterKeyGossip {
		for _, k := range c.Gossip.ExtraKeys {
			keys = append(keys, deriveClusterKey(k))
		}
	}
	return keys
}

// deriveClusterKey is the default cluster key of nodes sharing a gossip
// key: HMAC-SHA256(gossip key, label), hex. Apps are given API keys, never
// the gossip key, so none of them holds it.
func deriveClusterKey(gossipKey []byte) string {
	m := hmac.New(sha256.New, gossipKey)
	m.Write([]byte(clusterKeyDerivedAs))
	return hex.EncodeToString(m.Sum(nil))
}

func (c Config) withDefaults() Config {
	c.APIKeys = append([]string(nil), c.APIKeys...)
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8787"
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName()
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 256 << 10
	}
	if c.MaxMetadataKeys <= 0 {
		c.MaxMetadataKeys = 50
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = c.MaxBodyBytes + 64<<10
	}
	if c.MaxMailboxBytes == 0 {
		c.MaxMailboxBytes = ws.DefaultMaxMailboxBytes
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 100000
	}
	if c.MaxConnectionsPerParticipant <= 0 {
		c.MaxConnectionsPerParticipant = 8
	}
	if c.MaxConnectionsPerCredential <= 0 {
		c.MaxConnectionsPerCredential = max(1, c.MaxConnections/4)
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
	if c.MaxObservers <= 0 {
		c.MaxObservers = 64
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.TokenLeeway <= 0 {
		c.TokenLeeway = 30 * time.Second
	}
	switch {
	case c.RateLimit == 0:
		c.RateLimit = 10000
	case c.RateLimit < 0:
		c.RateLimit = 0 // off
	}
	if c.RateBurst <= 0 {
		c.RateBurst = int(2 * c.RateLimit)
	}
	c.AllowedOrigins = append([]string(nil), c.AllowedOrigins...)
	switch {
	case c.ClusterKey != "":
		c.clusterKeyFrom = clusterKeyExplicit
	case c.Gossip != nil && len(c.Gossip.Key) > 0 && len(c.APIKeys) > 0:
		c.ClusterKey, c.clusterKeyFrom = deriveClusterKey(c.Gossip.Key), clusterKeyGossip
	case len(c.APIKeys) > 0:
		c.ClusterKey, c.clusterKeyFrom = c.APIKeys[0], clusterKeyFirstAPI
	}
	c.ExtraClusterKeys = append([]string(nil), c.ExtraClusterKeys...)
	c.AllowGateways = append([]string(nil), c.AllowGateways...)
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = 5 * time.Second
	}
	if c.PeerAttemptTimeout <= 0 {
		c.PeerAttemptTimeout = 2 * time.Second
	}
	if c.MaxHandoffBytes <= 0 {
		c.MaxHandoffBytes = routing.MaxStateBytes(c.MaxBodyBytes, c.MailboxSize, c.MaxMailboxBytes)
	}
	if c.MaxExternalParticipants <= 0 {
		c.MaxExternalParticipants = 10000
	}
	if c.MaxExternalsPerCredential <= 0 {
		c.MaxExternalsPerCredential = 1000
	}
	if c.ExternalTTL <= 0 {
		c.ExternalTTL = 30 * time.Minute
	}
	if c.ExternalFailureLimit <= 0 {
		c.ExternalFailureLimit = 5
	}
	if c.ExternalRetryAfter <= 0 {
		c.ExternalRetryAfter = time.Minute
	}
	if c.MaxSessionsPerParticipant <= 0 {
		c.MaxSessionsPerParticipant = 10000
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// MaxMaxBatchBytes bounds MaxBatchBytes: what one write may carry is held
// in a buffer while it is written (and pooled afterwards).
const MaxMaxBatchBytes = 16 << 20

// MaxCoalesceWindow bounds CoalesceWindow: a window is a latency paid by
// every event, and a shutdown waits for writers sleeping in it.
const MaxCoalesceWindow = time.Second

// ErrInsecureListen is returned by New for a non-loopback Listen without
// API keys and without Insecure.
var ErrInsecureListen = errors.New("refusing to serve without authentication on a non-loopback address")

func (c Config) check() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if c.MaxBatchBytes < 0 || c.MaxBatchBytes > MaxMaxBatchBytes {
		return fmt.Errorf("--max-batch-bytes %d: want between 1 and %d (0: the default)", c.MaxBatchBytes, MaxMaxBatchBytes)
	}
	if c.CoalesceWindow < 0 || c.CoalesceWindow > MaxCoalesceWindow {
		return fmt.Errorf("--coalesce-window %v: want between 0 and %v (it delays every event by up to that much)", c.CoalesceWindow, MaxCoalesceWindow)
	}
	for _, k := range c.ExtraClusterKeys {
		if strings.TrimSpace(k) == "" {
			return errors.New("a --cluster-key is empty: give non-empty keys")
		}
	}
	for _, k := range c.APIKeys {
		if strings.TrimSpace(k) == "" {
			return errors.New("an API key is empty: give non-empty keys (--api-key, SWITCHYARD_API_KEYS, --api-keys-file)")
		}
		if c.clusterKeyFrom == clusterKeyExplicit && slices.Contains(c.clusterKeys(), k) {
			return errors.New("--cluster-key is also an API key: the cluster key is the nodes' own credential and " +
				"must not be given to apps; choose another one (or leave it out to derive it from --gossip-key)")
		}
	}
	if len(c.APIKeys) > 0 || c.Insecure {
		return nil
	}
	if !isLoopbackListen(c.Listen) {
		return fmt.Errorf("%w: %q is reachable from other hosts; set an API key with --api-key "+
			"(or SWITCHYARD_API_KEYS, or --api-keys-file), or pass --insecure to allow it", ErrInsecureListen, c.Listen)
	}
	return nil
}

// isLoopbackListen reports whether addr only listens on loopback. An empty
// host listens on every interface, so it is not.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultNodeName is the host name plus a short random suffix, so that a
// restarted process never collides with its dead predecessor.
func DefaultNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "switchyard"
	}
	return host + "-" + strings.ToLower(rand.Text()[:6])
}

// externalLimitsOf are the external participants' settings of cfg.
func externalLimitsOf(cfg Config) routing.ExternalLimits {
	return routing.ExternalLimits{Max: cfg.MaxExternalParticipants, PerCredential: cfg.MaxExternalsPerCredential,
		Sessions: cfg.MaxSessionsPerParticipant, TTL: cfg.ExternalTTL, FailureLimit: cfg.ExternalFailureLimit,
		RetryAfter: cfg.ExternalRetryAfter}
}
