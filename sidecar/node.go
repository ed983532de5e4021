package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// Node is one Switchyard process: the HTTP listener with the REST API and the
// WebSocket attach, the hub of local participants, and the gateway core.
type Node struct {
	cfg     Config
	log     *slog.Logger
	auth    *authenticator
	metrics *Metrics
	// observers caches request-duration histograms by route (measure).
	observers sync.Map
	cluster   membership.Cluster
	gossip    *membership.Gossip // nil for a one-node cluster
	peers     *peerClient
	hub       *ws.Hub
	gw        *routing.Gateway
	backend   *wsBackend // answers the hub's client frames
	watchers  *observers // observe=1 attaches

	ln       net.Listener
	srv      *http.Server
	url      string
	started  atomic.Bool
	draining atomic.Bool

	// tasks owns every goroutine of the node that outlives the request or
	// call that started it: the serve loop, the externals' sweeper, a held
	// hand-off state's expiry. Shutdown stops it first (nothing new
	// starts) and closes it last.
	tasks *tasks.Group

	shutdownOnce sync.Once
	shutdownErr  error

	// newConns are connections that have not sent a request yet; at
	// shutdown they are closed at once instead of waited for (net/http
	// waits up to 5 s for them).
	connMu   sync.Mutex
	newConns map[net.Conn]struct{}
}

// New checks cfg, binds the listener (so the node's URL is known and a busy
// port is reported here) and builds the node. Start serves it.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.NodeName),
		metrics: newMetrics(cfg.Version),
		ln:      ln,
		url:     cfg.AdvertiseURL,
		tasks:   tasks.New(),
	}
	if n.url == "" {
		scheme := "http://"
		if cfg.TLSCert != "" {
			scheme = "https://"
		}
		n.url = scheme + ln.Addr().String()
	}
	roots, err := peerRoots(cfg.PeerCA)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("load --tls-cert and --tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	n.auth = &authenticator{keys: newKeyring(cfg.APIKeys), cluster: newKeyring(cfg.clusterKeys())}
	if cfg.clusterKeyFrom == clusterKeyFirstAPI && cfg.Gossip != nil {
		n.log.Warn("the cluster key is the first API key",
			"why", "no --cluster-key and no --gossip-key: whoever holds that key can call the node-to-node endpoints and speak for nodes",
			"fix", "set --gossip-key (the cluster key is then derived from it) or --cluster-key")
	}
	if len(cfg.TokenSecret) > 0 {
		n.auth.tokens = &tokenVerifier{secret: cfg.TokenSecret, leeway: cfg.TokenLeeway}
	}
	if cfg.RateLimit > 0 {
		n.auth.limit = newRateLimiter(cfg.RateLimit, cfg.RateBurst, time.Now)
	}
	n.peers = newPeerClient(cfg.PeerAttemptTimeout, roots) // before gossip starts: it pushes through it
	// The node-to-node protocol; its cluster is set once there is one.
	peers := &httpPeers{client: n.peers, clusterKey: cfg.ClusterKey, stateLimit: cfg.MaxHandoffBytes}
	if cfg.Gossip == nil {
		n.cluster = membership.NewLocal(cfg.NodeName, n.url)
	} else {
		gc := *cfg.Gossip
		gc.NodeName, gc.URL, gc.Version, gc.Logger = cfg.NodeName, n.url, cfg.Version, n.log
		gc.Push, gc.Fetch = peers.PushDirectory, peers.FetchDirectory
		if n.gossip, err = membership.NewGossip(gc); err != nil {
			_ = ln.Close()
			return nil, err
		}
		n.cluster = n.gossip
	}
	peers.cluster = n.cluster
	n.watchers = newObservers(cfg.MaxObservers)
	backend := &wsBackend{cluster: n.cluster, limit: n.auth.limit, metrics: n.metrics, log: n.log} // its gateway comes next
	n.hub = ws.NewHub(ws.Config{
		Node:                      cfg.NodeName,
		MailboxSize:               cfg.MailboxSize,
		MaxMailboxBytes:           cfg.MaxMailboxBytes,
		MailboxTTL:                cfg.MailboxTTL,
		OfflineTTL:                cfg.OfflineTTL,
		DedupeWindow:              cfg.DedupeWindow,
		WriteQueueBytes:           cfg.WriteQueueBytes,
		WriteTimeout:              cfg.WriteTimeout,
		PingInterval:              cfg.PingInterval,
		PingTimeout:               cfg.PingTimeout,
		CoalesceWindow:            cfg.CoalesceWindow,
		MaxBatchBytes:             cfg.MaxBatchBytes,
		MaxFrameBytes:             cfg.MaxFrameBytes,
		MaxSessionsPerParticipant: cfg.MaxSessionsPerParticipant,
		DrainSpread:               cfg.DrainTimeout / 4,
		Backend:                   backend,
		Listener:                  directoryWriter{n.cluster},
		BeforeWelcome:             func(ctx context.Context) { n.cluster.Sync(ctx) },
		Metrics:                   n.metrics.Hub,
		Logger:                    n.log,

		MaxConnectionsPerParticipant: cfg.MaxConnectionsPerParticipant,
		MaxConnectionsPerCredential:  cfg.MaxConnectionsPerCredential,
	})
	n.gw = routing.NewGateway(routing.Config{
		Self:           cfg.NodeName,
		Limits:         wire.Limits{MaxMessageBytes: cfg.MaxMessageBytes, MaxMetadataKeys: cfg.MaxMetadataKeys},
		Hub:            n.hub,
		Cluster:        n.cluster,
		Peers:          peers,
		Gateways:       httpGateways{client: n.peers, externalKey: cfg.ExternalKey},
		AllowGateways:  cfg.AllowGateways,
		ForwardTimeout: cfg.ForwardTimeout,
		Externals:      externalLimitsOf(cfg),
		StateLimit:     cfg.MaxHandoffBytes,
		Tasks:          n.tasks,
		Published:      n.watchers.publish,
		Metrics:        n.metrics.Gateway,
		Logger:         n.log,
	})
	backend.g = n.gw
	n.backend = backend
	n.metrics.watchExternals(n.gw.ExternalCount)
	n.newConns = map[net.Conn]struct{}{}
	n.srv = &http.Server{
		ConnState:         n.trackConn,
		TLSConfig:         tlsConfig,
		Handler:           n.routes(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	return n, nil
}

func (n *Node) trackConn(c net.Conn, state http.ConnState) {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	if state == http.StateNew {
		n.newConns[c] = struct{}{}
	} else {
		delete(n.newConns, c)
	}
}

func (n *Node) closeNewConns() {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	for c := range n.newConns {
		_ = c.Close()
	}
}

// peerRoots is the system's CA pool plus the PEM file path, if any.
func peerRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil // the system's
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the peer CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the peer CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// URL is the base URL clients and peers reach this node at.
func (n *Node) URL() string { return n.url }

// Name is the node's name in the cluster.
func (n *Node) Name() string { return n.cfg.NodeName }

// Addr is the address the listener is bound to.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Settled reports whether the node has learnt the cluster (see
// membership.Cluster.Settled); until then it is not ready.
func (n *Node) Settled() bool { return n.cluster.Settled() }

// GossipAddr is the address peers reach this node's gossip at, or "" for a
// node without gossip.
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.GossipAddr()
}

// Gateway is the node's core, for callers that submit without HTTP.
func (n *Node) Gateway() *routing.Gateway { return n.gw }

// Start serves the listener, and sweeps idle external participants, in
// goroutines the node owns until Shutdown. After Shutdown it does nothing.
func (n *Node) Start() {
	if !n.started.CompareAndSwap(false, true) {
		return
	}
	if n.tasks.Go(n.serveHTTP) != nil {
		_ = n.ln.Close() // Shutdown came first
		return
	}
	_ = n.tasks.Go(n.gw.SweepExternals) // refused only when Shutdown began meanwhile: no sweep is wanted then
	n.log.Info("serving", "url", n.url, "listen", n.ln.Addr().String(), "version", n.cfg.Version,
		"auth", n.auth.enabled())
}

// serveHTTP serves the listener until Shutdown shuts the server down.
func (n *Node) serveHTTP(context.Context) {
	var err error
	if n.srv.TLSConfig != nil {
		err = n.srv.ServeTLS(n.ln, "", "") // the certificate was loaded by New
	} else {
		err = n.srv.Serve(n.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("http server stopped", "err", err)
	}
}

// Run starts the node, serves until ctx ends, then shuts down gracefully
// within the drain timeout.
func (n *Node) Run(ctx context.Context) error {
	n.Start()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	return n.Shutdown(sctx)
}

// Shutdown turns the node unready, closes its WebSockets with 1001 after
// they flush, stops the listener and waits for in-flight requests, all
// within ctx. It is safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		n.draining.Store(true)
		n.gw.StartDraining()
		// Nothing new starts in the background; the externals' sweeper
		// stops (external participants stay as they are while the node
		// drains). The serve loop keeps serving until the server stops.
		n.tasks.Stop()
		n.log.Info("draining")
		n.watchers.closeAll() // observers hold no state: 1001 at once
		n.hub.Drain()         // 1001 to every client, spread over a quarter of the drain
		if n.gossip != nil {  // before leaving: what is here moves to successors
			n.gw.HandOff(ctx)
		}
		hubErr := n.hub.Shutdown(ctx)
		obsErr := n.watchers.wait(ctx) // their close handshakes, begun before the hub's drain
		if n.gossip != nil {           // peers drop our routes at once
			// A leave that has not spread in time is not a failed drain:
			// the peers were told directly first, and failure detection
			// covers the rest.
			if err := n.gossip.Leave(leaveTimeout(ctx)); err != nil {
				n.log.Warn("the leave message did not spread in time", "err", err)
			}
		}
		shut := make(chan error, 1)
		go func() { shut <- n.srv.Shutdown(ctx) }() // waits for in-flight requests and their forwards
		n.closeNewConns()
		srvErr := <-shut
		if srvErr != nil {
			_ = n.srv.Close()
		}
		if !n.started.Load() {
			_ = n.ln.Close()
		}
		// Every task ends soon after its context is cancelled, and the
		// serve loop once the server is shut or closed (above): they are
		// waited for in full, so that none outlives the node.
		_ = n.tasks.Close(context.Background())
		if n.gossip != nil {
			_ = n.gossip.Shutdown()
		}
		n.peers.close()
		n.gw.DropHeld() // no confirm or restore can come any more
		n.shutdownErr = errors.Join(hubErr, obsErr, srvErr)
		n.log.Info("stopped")
	})
	return n.shutdownErr
}

// leaveTimeout is how long a leave may wait for the message to spread: two
// seconds, or less when the drain deadline is nearer.
func leaveTimeout(ctx context.Context) time.Duration {
	d := 2 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(deadline)/2)
	}
	return max(d, 10*time.Millisecond)
}

// directoryWriter copies this node's participants into the cluster's
// directory, one change at a time.
type directoryWriter struct{ cluster membership.Cluster }

func (d directoryWriter) LocalParticipant(p ws.ParticipantInfo) {
	d.cluster.SetLocal(p.ID, p.Type, p.Online)
}

func (d directoryWriter) LocalSessionJoined(id, typ, session string) {
	d.cluster.JoinLocal(id, typ, session)
}

func (d directoryWriter) LocalSessionLeft(id, session string) { d.cluster.LeaveLocal(id, session) }

func (d directoryWriter) LocalParticipantGone(id string) { d.cluster.DeleteLocal(id) }
