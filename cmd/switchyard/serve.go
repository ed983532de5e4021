package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar"
)

type serveFlags struct {
	listen, advertiseURL, nodeName  string
	apiKeys                         listFlag
	apiKeysFile                     string
	insecure                        bool
	maxBodyBytes                    int64
	maxMessageBytes, mailboxSize    int
	maxConnections, writeQueueBytes int
	mailboxTTL, offlineTTL          time.Duration
	dedupeWindow                    time.Duration
	maxMetadataKeys, maxSessions    int
	maxFrameBytes                   int64
	maxHandoffBytes                 int64
	maxMailboxBytes                 int64
	drainTimeout, writeTimeout      time.Duration
	pingInterval, pingTimeout       time.Duration
	coalesceWindow                  time.Duration
	maxBatchBytes                   int
	readHeaderTimeout, idleTimeout  time.Duration
	logLevel, logFormat             string

	gossipBind, gossipAdvertise string
	join                        listFlag
	gossipKeys                  listFlag
	clusterKeys                 listFlag
	externalKey                 string
	allowGateways               listFlag
	forwardTimeout              time.Duration
	rejoinInterval              time.Duration
	directoryReplicas           int
	directoryResync             time.Duration

	maxExternals, maxExternalsPerCredential int
	externalTTL, externalRetryAfter         time.Duration
	externalFailureLimit                    int

	tokenSecret, tokenSecretFile string
	tokenLeeway                  time.Duration
	rateLimit                    float64
	rateBurst                    int
	allowedOrigins               listFlag
	tlsCert, tlsKey, peerCA      string
	configFile                   string
	printConfig, printSecrets    bool
	debugListen                  string

	maxConnsPerParticipant, maxConnsPerCredential int
	maxObservers                                  int
	ui                                            bool
}

func newServeFlags() (*flag.FlagSet, *serveFlags) {
	fs := newFlagSet("serve")
	f := &serveFlags{}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8787", "HTTP listen address")
	fs.StringVar(&f.advertiseURL, "advertise-url", "", "URL clients and peers reach this node at (default http://<listen address>)")
	fs.StringVar(&f.nodeName, "node-name", "", "node name in the cluster (default: host name plus a random suffix)")
	fs.Var(&f.apiKeys, "api-key", "accepted API key (repeatable; SWITCHYARD_API_KEYS takes a comma-separated list)")
	fs.StringVar(&f.apiKeysFile, "api-keys-file", "", "file of API keys, one per line (# starts a comment)")
	fs.BoolVar(&f.insecure, "insecure", false, "allow a non-loopback --listen without API keys")
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", 1<<20, "largest request body in bytes (413 past it)")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", 256<<10, "largest event message in bytes (422 past it)")
	fs.IntVar(&f.maxMetadataKeys, "max-metadata-keys", 50, "most keys in an event's metadata (422 past it)")
	fs.IntVar(&f.maxSessions, "max-sessions-per-participant", 10000, "most sessions one participant joins (422 past it)")
	fs.Int64Var(&f.maxFrameBytes, "max-frame-bytes", 0, "largest WebSocket client frame, close 1009 past it (default: --max-body-bytes + 64 KiB)")
	fs.IntVar(&f.mailboxSize, "mailbox-size", 1024, "events kept per participant for resumption")
	fs.Int64Var(&f.maxMailboxBytes, "max-mailbox-bytes", 256<<20, "bytes all mailboxes on this node may hold, each event counted once; past it new events for participants here get 503 mailbox_budget_exhausted (-1: no budget)")
	fs.DurationVar(&f.mailboxTTL, "mailbox-ttl", 5*time.Minute, "how long an event stays in a mailbox")
	fs.DurationVar(&f.offlineTTL, "offline-ttl", 2*time.Minute, "how long a detached participant stays routable")
	fs.Int64Var(&f.maxHandoffBytes, "max-handoff-bytes", 0, "largest participant state (mailbox, seqs, dedupe keys) moved between nodes (default: what the fullest mailbox can hold)")
	fs.DurationVar(&f.dedupeWindow, "dedupe-window", 10*time.Minute, "how long a retried (sender_id, event_id) is not delivered again")
	fs.IntVar(&f.maxConnections, "max-connections", 100000, "WebSocket connections per node (503 past it)")
	fs.IntVar(&f.maxConnsPerParticipant, "max-connections-per-participant", 8, "WebSocket connections one participant holds on this node (429 past it)")
	fs.IntVar(&f.maxConnsPerCredential, "max-connections-per-credential", 0, "WebSocket connections attached with one API key or participant token's subject on this node (429 past it; default: a quarter of --max-connections)")
	fs.IntVar(&f.maxObservers, "max-observers", 64, "read-only observer attaches (observe=1, the web console's live view) on this node (503 past it)")
	fs.BoolVar(&f.ui, "ui", false, "serve the web console at /ui (its data calls need an API key)")
	fs.IntVar(&f.writeQueueBytes, "write-queue-bytes", 4<<20, "unsent bytes a connection may fall behind before close 4000")
	fs.DurationVar(&f.writeTimeout, "write-timeout", 10*time.Second, "deadline of one WebSocket write")
	fs.DurationVar(&f.pingInterval, "ping-interval", 30*time.Second, "how long a WebSocket connection may be quiet before the node pings it")
	fs.DurationVar(&f.pingTimeout, "ping-timeout", 10*time.Second, "how long a ping may go unanswered before the connection is dropped (its slots freed)")
	fs.DurationVar(&f.coalesceWindow, "coalesce-window", 0, "how long a woken WebSocket writer waits so that events arriving meanwhile share one write (0: write at once)")
	fs.IntVar(&f.maxBatchBytes, "max-batch-bytes", 64<<10, "largest WebSocket message joining several frames for batch=1 clients, and the most one write to a connection carries")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Second, "how long a graceful shutdown may take")
	fs.DurationVar(&f.readHeaderTimeout, "read-header-timeout", 10*time.Second, "deadline for reading request headers")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 120*time.Second, "idle keep-alive HTTP connections are closed after it")
	fs.StringVar(&f.gossipBind, "gossip-bind", "127.0.0.1:7946", "gossip (memberlist) listen address, TCP and UDP")
	fs.StringVar(&f.gossipAdvertise, "gossip-advertise", "", "address peers reach the gossip port at (default: the bind address)")
	fs.Var(&f.join, "join", "peer to join: host:port or a DNS name such as a headless Service (repeatable)")
	fs.Var(&f.gossipKeys, "gossip-key", "base64 AES key (16, 24 or 32 bytes) that encrypts gossip; repeat to also accept older or newer keys while rotating (the first encrypts)")
	fs.Var(&f.clusterKeys, "cluster-key", "the nodes' own credential for deliveries between peers and the /v1/gateway/cluster/ endpoints, which take no other; must not be an API key (default: derived from --gossip-key; without one, the first API key); repeat to also accept older or newer keys while rotating (the first is sent)")
	fs.StringVar(&f.externalKey, "external-key", "", "bearer token sent to external gateways")
	fs.Var(&f.allowGateways, "allow-gateway", "URL prefix an external gateway URL must start with (repeatable)")
	fs.DurationVar(&f.forwardTimeout, "forward-timeout", 5*time.Second, "deadline for handing an event to peers and gateways, retries included")
	fs.IntVar(&f.maxExternals, "max-external-participants", 10000, "external participants (behind other gateways) this node registers (503 past it)")
	fs.IntVar(&f.maxExternalsPerCredential, "max-externals-per-credential", 1000, "external participants one API key registers on this node (503 past it)")
	fs.DurationVar(&f.externalTTL, "external-ttl", 30*time.Minute, "an external participant idle this long (no submit, PUT or delivery) is dropped")
	fs.IntVar(&f.externalFailureLimit, "external-failure-limit", 5, "failed deliveries in a row after which an external participant is dropped from its sessions")
	fs.DurationVar(&f.externalRetryAfter, "external-retry-after", time.Minute, "how long a node skips another node's external participant after --external-failure-limit failed deliveries in a row, before probing it again")
	fs.DurationVar(&f.rejoinInterval, "rejoin-interval", 30*time.Second, "how often --join is retried, so a node cut off comes back")
	fs.IntVar(&f.directoryReplicas, "directory-replicas", membership.DefaultReplicas, "nodes that keep each directory record (who is in a session, where a participant lives); the same on every node")
	fs.DurationVar(&f.directoryResync, "directory-resync-interval", membership.DefaultAntiEntropyInterval, "how often a node checks, by digest, that the nodes keeping its participants' directory records have them (a mismatch re-sends them)")
	fs.StringVar(&f.tokenSecret, "token-secret", "", "secret that verifies participant tokens (HS256); prefer SWITCHYARD_TOKEN_SECRET or --token-secret-file")
	fs.StringVar(&f.tokenSecretFile, "token-secret-file", "", "file holding the participant token secret")
	fs.DurationVar(&f.tokenLeeway, "token-leeway", 30*time.Second, "clock skew allowed on a token's exp and nbf")
	fs.Float64Var(&f.rateLimit, "rate-limit", 10000, "requests per second per credential on submit, attach and session changes, WebSocket submit, join and leave frames included (429 past it; -1: off)")
	fs.IntVar(&f.rateBurst, "rate-burst", 0, "burst of the rate limit (default: twice --rate-limit)")
	fs.Var(&f.allowedOrigins, "allowed-origins", "Origin host pattern a browser WebSocket may come from, e.g. app.example.com or *.example.com (repeatable)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate: serve HTTPS and WSS (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.peerCA, "peer-ca", "", "PEM CA certificates trusted for https peers and gateways, besides the system's")
	fs.StringVar(&f.configFile, "config", "", "YAML file with serve flags as keys (flags > environment > file > defaults)")
	fs.BoolVar(&f.printConfig, "print-config", false, "print the effective configuration as YAML that --config takes back, and exit (secrets that are set are named in a comment, not printed)")
	fs.BoolVar(&f.printSecrets, "print-secrets", false, "with --print-config: print the secrets too")
	fs.StringVar(&f.debugListen, "debug-listen", "", "address serving Go's /debug/pprof profiles, e.g. 127.0.0.1:6060 (default: off; keep it private)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	return fs, f
}

var serveCmd = command{name: "serve", synopsis: "[flags]", env: true, about: `
Runs a node. Flags also come from SWITCHYARD_<FLAG> (shown in brackets) and
from the YAML file of --config: flags > environment > file > defaults.`}

func serveCommand(args []string, stdout, stderr io.Writer) error {
	fs, f := newServeFlags()
	if err := serveCmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if f.configFile != "" {
		if err := applyConfigFile(fs, f.configFile, flagsSet(fs)); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if err := checkKeyInputs(fs, f); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if os.Getenv("SWITCHYARD_API_KEYS") != "" && len(f.apiKeys) == 0 {
		for _, k := range splitList(os.Getenv("SWITCHYARD_API_KEYS")) {
			_ = f.apiKeys.Set(k)
		}
	}
	if f.printSecrets && !f.printConfig {
		return fmt.Errorf("%w: --print-secrets goes with --print-config", errUsage)
	}
	if f.printConfig {
		out, err := printConfig(fs, f.printSecrets)
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}
	logger, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	keys := append([]string(nil), f.apiKeys...)
	if f.apiKeysFile != "" {
		fileKeys, err := readKeysFile(f.apiKeysFile)
		if err != nil {
			return err
		}
		if len(fileKeys) == 0 {
			return fmt.Errorf("%w: --api-keys-file %s holds no key: authentication would be off; add a key, one per line", errUsage, f.apiKeysFile)
		}
		keys = append(keys, fileKeys...)
	}
	cfg, err := f.config(keys, logger)
	if err != nil {
		return err
	}
	node, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(logger)
	defer stop()
	if f.debugListen != "" {
		_, stopDebug, err := serveDebug(f.debugListen, logger)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	return node.Run(ctx)
}

// config turns the flags into a node configuration.
func (f *serveFlags) config(keys []string, logger *slog.Logger) (sidecar.Config, error) {
	var gossipKeys [][]byte
	for _, k := range f.gossipKeys {
		key, err := membership.ParseGossipKey(k)
		if err != nil {
			return sidecar.Config{}, fmt.Errorf("%w: --gossip-key: %v", errUsage, err)
		}
		gossipKeys = append(gossipKeys, key)
	}
	var gossipKey []byte
	if len(gossipKeys) > 0 {
		gossipKey = gossipKeys[0]
	}
	secret := []byte(f.tokenSecret)
	if f.tokenSecretFile != "" {
		b, err := os.ReadFile(f.tokenSecretFile)
		if err != nil {
			return sidecar.Config{}, fmt.Errorf("read --token-secret-file: %w", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	}
	return sidecar.Config{
		Listen:                       f.listen,
		AdvertiseURL:                 f.advertiseURL,
		NodeName:                     f.nodeName,
		APIKeys:                      keys,
		Insecure:                     f.insecure,
		MaxBodyBytes:                 f.maxBodyBytes,
		MaxMessageBytes:              f.maxMessageBytes,
		MaxMetadataKeys:              f.maxMetadataKeys,
		MaxFrameBytes:                f.maxFrameBytes,
		MaxSessionsPerParticipant:    f.maxSessions,
		MailboxSize:                  f.mailboxSize,
		MailboxTTL:                   f.mailboxTTL,
		OfflineTTL:                   f.offlineTTL,
		DedupeWindow:                 f.dedupeWindow,
		WriteQueueBytes:              f.writeQueueBytes,
		WriteTimeout:                 f.writeTimeout,
		PingInterval:                 f.pingInterval,
		PingTimeout:                  f.pingTimeout,
		CoalesceWindow:               f.coalesceWindow,
		MaxBatchBytes:                f.maxBatchBytes,
		MaxConnections:               f.maxConnections,
		DrainTimeout:                 f.drainTimeout,
		ReadHeaderTimeout:            f.readHeaderTimeout,
		IdleTimeout:                  f.idleTimeout,
		TokenSecret:                  secret,
		TokenLeeway:                  f.tokenLeeway,
		RateLimit:                    f.rateLimit,
		RateBurst:                    f.rateBurst,
		AllowedOrigins:               f.allowedOrigins,
		TLSCert:                      f.tlsCert,
		TLSKey:                       f.tlsKey,
		PeerCA:                       f.peerCA,
		ClusterKey:                   first(f.clusterKeys),
		ExtraClusterKeys:             f.clusterKeys[min(1, len(f.clusterKeys)):],
		ExternalKey:                  f.externalKey,
		AllowGateways:                f.allowGateways,
		ForwardTimeout:               f.forwardTimeout,
		MaxExternalParticipants:      f.maxExternals,
		MaxExternalsPerCredential:    f.maxExternalsPerCredential,
		ExternalTTL:                  f.externalTTL,
		ExternalFailureLimit:         f.externalFailureLimit,
		ExternalRetryAfter:           f.externalRetryAfter,
		MaxConnectionsPerParticipant: f.maxConnsPerParticipant,
		MaxConnectionsPerCredential:  f.maxConnsPerCredential,
		MaxObservers:                 f.maxObservers,
		UI:                           f.ui,
		MaxHandoffBytes:              f.maxHandoffBytes,
		MaxMailboxBytes:              f.maxMailboxBytes,
		Gossip: &membership.GossipConfig{
			Bind:                f.gossipBind,
			Advertise:           f.gossipAdvertise,
			Join:                f.join,
			Key:                 gossipKey,
			ExtraKeys:           gossipKeys[min(1, len(gossipKeys)):],
			RejoinInterval:      f.rejoinInterval,
			Replicas:            f.directoryReplicas,
			AntiEntropyInterval: f.directoryResync,
		},
		Version: versionString(),
		Logger:  logger,
	}, nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits the process at once. Its stop function ends the watcher and waits
// for it.
func signalContext(logger *slog.Logger) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	watcher := tasks.New()
	_ = watcher.Go(func(stopped context.Context) { // a new group refuses nothing
		select {
		case sig := <-sigs:
			logger.Info("signal received, shutting down; send another to force", "signal", sig.String())
			cancel()
		case <-stopped.Done():
			return
		}
		select {
		case <-sigs:
			logger.Warn("second signal, exiting now")
			os.Exit(1)
		case <-stopped.Done():
		}
	})
	return ctx, func() {
		signal.Stop(sigs)
		_ = watcher.Close(context.Background()) // it returns at once
		cancel()
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// checkKeyInputs refuses an empty API key or cluster key given on purpose:
// a node would otherwise start with authentication on and no usable key,
// or silently without the key the operator meant to set. It runs before
// SWITCHYARD_API_KEYS is merged into --api-key.
func checkKeyInputs(fs *flag.FlagSet, f *serveFlags) error {
	for _, k := range f.apiKeys {
		if strings.TrimSpace(k) == "" {
			return errors.New("--api-key is empty: give a non-empty key, or leave the flag out")
		}
		if strings.TrimSpace(k) != k {
			return errors.New("an --api-key starts or ends with spaces: a bearer token cannot carry them; remove them")
		}
	}
	// The environment's key lists: an empty item (an extra comma, an unset
	// variable in a template) is refused rather than dropped.
	for _, env := range []string{envName("api-key"), "SWITCHYARD_API_KEYS"} {
		v, ok := os.LookupEnv(env)
		if !ok {
			continue
		}
		for i, item := range strings.Split(v, ",") {
			if strings.TrimSpace(item) == "" { // the value itself is secret: never printed
				return fmt.Errorf("%s holds an empty key (item %d): give non-empty keys, comma-separated, or unset it", env, i+1)
			}
		}
	}
	if flagsSet(fs)["cluster-key"] && len(f.clusterKeys) == 0 {
		return errors.New("--cluster-key is empty: give a non-empty key, or leave it out to derive it from --gossip-key")
	}
	for _, k := range f.clusterKeys {
		if strings.TrimSpace(k) == "" {
			return errors.New("--cluster-key is empty: give a non-empty key, or leave it out to derive it from --gossip-key")
		}
	}
	return nil
}

// first is the first item of a list, or "".
func first(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

// readKeysFile reads API keys, one per line; blank lines and lines starting
// with # are skipped.
func readKeysFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read --api-keys-file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read --api-keys-file: %w", err)
	}
	return keys, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
