package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// Node is one Switchyard process: the HTTP listener with the REST API and the
// WebSocket attach, the hub of local participants, and the gateway core.
type Node struct {
	cfg     Config
	log     *slog.Logger
	keys    *keyring
	metrics *Metrics
	cluster membership.Cluster
	hub     *ws.Hub
	gw      *Gateway

	ln        net.Listener
	srv       *http.Server
	url       string
	serveDone chan struct{}
	started   atomic.Bool
	draining  atomic.Bool

	shutdownOnce sync.Once
	shutdownErr  error
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
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.NodeName),
		keys:      newKeyring(cfg.APIKeys),
		metrics:   newMetrics(),
		ln:        ln,
		url:       cfg.AdvertiseURL,
		serveDone: make(chan struct{}),
	}
	if n.url == "" {
		n.url = "http://" + ln.Addr().String()
	}
	n.cluster = cfg.Cluster
	if n.cluster == nil {
		n.cluster = membership.NewLocal(cfg.NodeName, n.url)
	}
	n.gw = &Gateway{
		limits:  Limits{MaxMessageBytes: cfg.MaxMessageBytes, MaxMetadataKeys: cfg.MaxMetadataKeys},
		cluster: n.cluster,
		metrics: n.metrics,
		log:     n.log,
		now:     time.Now,
	}
	n.hub = ws.NewHub(ws.Config{
		Node:            cfg.NodeName,
		MailboxSize:     cfg.MailboxSize,
		MailboxTTL:      cfg.MailboxTTL,
		OfflineTTL:      cfg.OfflineTTL,
		WriteQueueBytes: cfg.WriteQueueBytes,
		WriteTimeout:    cfg.WriteTimeout,
		MaxFrameBytes:   cfg.MaxFrameBytes,
		Backend:         wsBackend{n.gw},
		Listener:        directoryWriter{dir: n.cluster.Directory(), node: cfg.NodeName},
		Metrics:         n.metrics.Hub,
		Logger:          n.log,
	})
	n.gw.hub = n.hub
	n.srv = &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	return n, nil
}

// URL is the base URL clients and peers reach this node at.
func (n *Node) URL() string { return n.url }

// Name is the node's name in the cluster.
func (n *Node) Name() string { return n.cfg.NodeName }

// Addr is the address the listener is bound to.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Gateway is the node's core, for callers that submit without HTTP.
func (n *Node) Gateway() *Gateway { return n.gw }

// Start serves the listener in a goroutine owned by the node until Shutdown.
func (n *Node) Start() {
	if !n.started.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer close(n.serveDone)
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	n.log.Info("serving", "url", n.url, "listen", n.ln.Addr().String(), "version", n.cfg.Version,
		"auth", n.keys.enabled())
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
		n.log.Info("draining")
		hubErr := n.hub.Shutdown(ctx)
		srvErr := n.srv.Shutdown(ctx)
		if srvErr != nil {
			_ = n.srv.Close()
		}
		if n.started.Load() {
			<-n.serveDone
		} else {
			_ = n.ln.Close()
		}
		n.shutdownErr = errors.Join(hubErr, srvErr)
		n.log.Info("stopped")
	})
	return n.shutdownErr
}

// directoryWriter copies this node's participants into the directory.
type directoryWriter struct {
	dir  *membership.Directory
	node string
}

func (d directoryWriter) LocalParticipant(p ws.ParticipantInfo) {
	d.dir.Put(membership.Entry{Participant: p.ID, Type: p.Type, Node: d.node, Sessions: p.Sessions, Online: p.Online})
}

func (d directoryWriter) LocalParticipantGone(id string) { d.dir.Delete(d.node, id) }
