package membership

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipConfig configures a gossiping Cluster. A zero field takes the
// default in its comment.
type GossipConfig struct {
	// NodeName is this node's unique name. Required.
	NodeName string
	// URL is this node's gateway URL, carried in its gossip metadata.
	URL string
	// Version is the software version, carried in the metadata.
	Version string
	// Bind is the gossip listen address host:port (--gossip-bind). Port 0
	// picks a free port. Default 127.0.0.1:7946.
	Bind string
	// Advertise is the address peers reach the gossip port at
	// (--gossip-advertise). Default: the bind address.
	Advertise string
	// Join lists peers to join: host:port pairs or DNS names (a headless
	// Service name resolves to every pod). Joining is retried in the
	// background until it succeeds, and repeated every RejoinInterval so a
	// node cut off by a partition comes back.
	Join []string
	// Key is the AES gossip key (16, 24 or 32 bytes), decoded. Empty: gossip
	// is not encrypted.
	Key []byte
	// ExtraKeys are further gossip keys accepted but not used to send: for
	// rotating the key without downtime (see docs/SECURITY.md).
	ExtraKeys [][]byte
	// Label tags every gossip packet; nodes with another label are ignored.
	// Default "switchyard".
	Label string
	// RejoinInterval: how often Join is retried. Default 30s.
	RejoinInterval time.Duration
	// SyncTimeout bounds how long Sync waits for the owners of this node's
	// records to acknowledge a change (an attach waits for it before its
	// welcome), and how long a lookup waits for the owners' answers.
	// Default 1s.
	SyncTimeout time.Duration
	// DepartedRetention: how long a dead or departed node stays listed by
	// Members. Default 10m.
	DepartedRetention time.Duration
	// Replicas is how many owner nodes keep each directory record
	// (--directory-replicas). With 2, a lookup still finds a record while
	// one of its owners dies or while a joining node takes it over.
	// Default 2.
	Replicas int
	// AntiEntropyInterval: how often this node sends each owner of its
	// records a digest of what that owner should hold; an owner that
	// holds something else is sent everything again, as a replace
	// (--directory-resync-interval). Repairs a change an owner missed.
	// Default 1m.
	AntiEntropyInterval time.Duration
	// Memberlist, when set, adjusts memberlist's configuration (which
	// starts from its LAN defaults) before the cluster is created; tests
	// use it for fast timers.
	Memberlist func(*memberlist.Config)
	// Push sends a directory message to a peer's gateway URL and returns
	// once the peer applied it (the sidecar posts it over its pooled HTTP
	// connections). sig is this node's signature of msg (see Sign): the
	// receiver passes it to HandlePush, which checks it against the public
	// key the named node gossips. Required for a cluster of more than one
	// node: records reach their owners only this way.
	Push func(ctx context.Context, peerURL string, msg []byte, sig string) error
	// Fetch sends a lookup to a peer's gateway URL and returns its answer
	// (the peer passes the request to HandleLookup). Required with Push.
	Fetch func(ctx context.Context, peerURL string, req []byte) ([]byte, error)
	// Transport replaces memberlist's network transport (tests inject
	// faults with it). Its address must match Bind.
	Transport memberlist.NodeAwareTransport
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg GossipConfig) withDefaults() GossipConfig {
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:7946"
	}
	if cfg.Label == "" {
		cfg.Label = "switchyard"
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = time.Second
	}
	if cfg.DepartedRetention <= 0 {
		cfg.DepartedRetention = 10 * time.Minute
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.AntiEntropyInterval <= 0 {
		cfg.AntiEntropyInterval = DefaultAntiEntropyInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Join = slices.Clone(cfg.Join)
	return cfg
}

// Defaults of the directory's settings.
const (
	DefaultReplicas            = 2
	DefaultAntiEntropyInterval = time.Minute
)

// ParseGossipKey decodes a base64 AES key of 16, 24 or 32 bytes.
func ParseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32 (AES-128, -192 or -256)", n)
	}
	return key, nil
}
