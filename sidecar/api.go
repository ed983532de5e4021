package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/readinto"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ui"
	"github.com/switchyard-gw/switchyard/ws"
)

const (
	wsPath        = "/v1/gateway/ws"
	directoryPath = "/v1/gateway/cluster/directory"
	lookupPath    = "/v1/gateway/cluster/lookup"
	// maxDirectoryPushBytes bounds a peer's directory message (and a
	// lookup's answer): a re-send of every record one home keeps on one
	// owner, 50,000 records, is about 5 MiB.
	maxDirectoryPushBytes = 64 << 20
	// maxLookupBytes bounds a peer's lookup request (at most 1,000 keys of
	// at most 258 bytes).
	maxLookupBytes = 1 << 20
)

// handlerFunc is an HTTP handler that returns its failure; serve renders it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// serve renders fn's failure as the SPEC error body. An error that is not
// an *Error is a failure the handler did not expect: the client gets a 500
// that says "it has been logged", and this is where it is, with its cause.
func (n *Node) serve(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer n.recoverPanic(w, r)
		err := fn(w, r)
		if err == nil {
			return
		}
		logIfUnexpected(r.Context(), n.log, err, "method", r.Method, "path", r.URL.Path)
		wire.WriteError(w, err)
	}
}

// recoverPanic turns a handler's panic into what an unexpected error gets:
// a 500 "internal" for the client and an error log line with the cause and
// the stack. Without it net/http would drop the connection with no answer
// and log the panic only at debug level (srv.ErrorLog). http.ErrAbortHandler
// is net/http's way to abort a response on purpose: it goes on up.
func (n *Node) recoverPanic(w http.ResponseWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	logIfUnexpected(r.Context(), n.log, fmt.Errorf("panic: %v", p),
		"method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
	wire.WriteError(w, errors.New("the handler panicked")) // a 500 that hides the cause
}

func (n *Node) routes() http.Handler {
	serve := n.serve // every handler's failure is rendered (and an unexpected one logged) by the node
	r := chi.NewRouter()
	r.Use(withRequestID, n.measure)
	r.NotFound(serve(func(http.ResponseWriter, *http.Request) error {
		return wire.NewError(http.StatusNotFound, "not_found", "", "no such endpoint; see the API reference")
	}))
	r.MethodNotAllowed(serve(func(http.ResponseWriter, *http.Request) error {
		return wire.NewError(http.StatusMethodNotAllowed, "method_not_allowed", "", "this endpoint does not take that method")
	}))
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { wire.WriteJSON(w, 200, []byte(`{"status":"ok"}`)) })
	r.Get("/openapi.json", n.handleOpenAPI)
	r.Get("/readyz", n.handleReady)
	r.Handle("/metrics", promhttp.HandlerFor(n.metrics.Registry, promhttp.HandlerOpts{}))
	if n.cfg.UI {
		console := ui.Handler()
		r.Get("/ui", console.ServeHTTP)
		r.Get("/ui/*", console.ServeHTTP)
	}
	r.Route("/v1/gateway", func(r chi.Router) {
		r.Use(n.auth.authenticate, clusterOnly)
		r.Group(func(r chi.Router) { // what clients do, rate-limited per credential
			r.Use(n.auth.rateLimited)
			r.Post("/events", serve(n.handleSubmit))
			r.Put("/sessions/{session_id}/participants/{participant_id}", serve(n.handlePutParticipant))
			r.Delete("/sessions/{session_id}/participants/{participant_id}", serve(n.handleDeleteParticipant))
			r.Get("/ws", serve(n.handleAttach))
		})
		r.Get("/sessions/{session_id}", serve(n.handleGetSession))
		r.Get("/members", serve(n.handleMembers))
		// deliveries: from peers (the cluster key) and external gateways
		// (an API key); the /cluster/ routes take the cluster key only
		// (clusterOnly, above, covers every path under it).
		r.Group(func(r chi.Router) {
			r.Use(needFullRights)
			r.Get("/participants", serve(n.handleLocalParticipants))
			r.Post("/deliveries", serve(n.handleDeliver))
			r.Post("/cluster/directory", serve(n.handleDirectoryPush))
			r.Post("/cluster/lookup", serve(n.handleDirectoryLookup))
			r.Post("/cluster/release", serve(n.handleRelease))
			r.Post("/cluster/restore", serve(n.handleRestore))
			r.Post("/cluster/takeover", serve(n.handleTakeover))
		})
	})
	return r
}

// needFullRights refuses participant tokens.
func needFullRights(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := credentialFrom(r.Context()).fullRights(); err != nil {
			wire.WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clusterPrefix is the path of the node-to-node endpoints.
const clusterPrefix = "/v1/gateway/cluster"

// clusterOnly refuses any credential but the cluster key on every path
// under clusterPrefix, whichever route serves it (or none): these
// endpoints let the caller speak for a node.
func clusterOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if underCluster(r.URL.Path) || underCluster(r.URL.RawPath) {
			if err := credentialFrom(r.Context()).clusterRights(); err != nil {
				wire.WriteError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func underCluster(p string) bool {
	return p == clusterPrefix || strings.HasPrefix(p, clusterPrefix+"/")
}

// measure records the latency of every request but WebSocket attaches
// (whose duration is the connection's life).
func (n *Node) measure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wsPath {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		n.requestObserver(r, sw.status).Observe(time.Since(start).Seconds())
	})
}

// observerKey names a request's histogram by what chi matched (its route
// patterns, at most three deep here), the method and the status, without
// building the route's label.
type observerKey struct {
	patterns [3]string
	method   string
	status   int
}

// requestObserver is the request-duration histogram of r's route, method
// and status; the label values are built and looked up once per key.
func (n *Node) requestObserver(r *http.Request, status int) prometheus.Observer {
	rc := chi.RouteContext(r.Context())
	key := observerKey{method: r.Method, status: status}
	// Bounded keys only: the methods a route can take, and no more patterns
	// than the key holds.
	cacheable := rc != nil && len(rc.RoutePatterns) <= len(key.patterns) && routeMethod(r.Method)
	if cacheable {
		copy(key.patterns[:], rc.RoutePatterns)
		if o, ok := n.observers.Load(key); ok {
			return o.(prometheus.Observer)
		}
	}
	route := "unmatched"
	if rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	method := r.Method
	if !routeMethod(method) { // clients send any token as a method: keep the label bounded
		method = "other"
	}
	o := n.metrics.RequestDuration.WithLabelValues(route, method, strconv.Itoa(status))
	if cacheable {
		n.observers.Store(key, o)
	}
	return o
}

func routeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (n *Node) handleReady(w http.ResponseWriter, _ *http.Request) {
	if n.draining.Load() || !n.started.Load() || !n.cluster.Settled() {
		wire.WriteJSON(w, http.StatusServiceUnavailable, []byte(`{"status":"draining"}`))
		return
	}
	wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// readBody reads a JSON request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !(len(mt) > 5 && mt[len(mt)-5:] == "+json")) {
			return nil, wire.NewError(http.StatusUnsupportedMediaType, "unsupported_media_type", "",
				"send the body as application/json")
		}
	}
	tooLarge := func() error {
		return wire.NewError(http.StatusRequestEntityTooLarge, "body_too_large", "",
			"the body is larger than the limit of "+strconv.FormatInt(limit, 10)+" bytes")
	}
	if r.ContentLength > limit {
		return nil, tooLarge()
	}
	body, err := readAtMost(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			// The rest of the body stays unread: closing the connection
			// keeps net/http from draining it after the answer. (The
			// metrics wrapper hides the hook MaxBytesReader would use.)
			w.Header().Set("Connection", "close")
			return nil, tooLarge()
		}
		return nil, wire.NewError(http.StatusBadRequest, "bad_request", "", "the body could not be read")
	}
	return body, nil
}

// readAtMost reads r to its end into a buffer sized for the declared
// Content-Length (unknown: -1), so that a typical body costs one
// allocation. The first buffer is at most firstReadBuffer: a client that
// declares a large body and trickles it holds only what it sent.
func readAtMost(r io.Reader, declared int64) ([]byte, error) {
	if declared < 0 {
		return io.ReadAll(r)
	}
	return readinto.Append(make([]byte, 0, min(declared, firstReadBuffer)+1), r) // +1: the read that sees the end
}

// firstReadBuffer bounds readAtMost's first allocation.
const firstReadBuffer = 64 << 10

func respond(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, b)
	return nil
}

func (n *Node) handleSubmit(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, n.cfg.MaxBodyBytes)
	if err == nil {
		var res routing.SubmitResult
		res, err = submitJSON(r.Context(), n.gw, body, credentialFrom(r.Context()), nil)
		if err == nil {
			n.metrics.recordSubmit(nil)
			wire.WriteJSON(w, http.StatusOK, res.AppendJSON(make([]byte, 0, 160)))
			return nil
		}
	}
	n.metrics.recordSubmit(err)
	return err
}

func (n *Node) handleDeliver(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, n.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var wd wire.DecodedDelivery
	if derr := wire.DecodeDelivery(body, &wd); derr != nil {
		return derr
	}
	req, verr := wd.Validate(n.gw.Limits())
	if verr != nil {
		return verr
	}
	res, err := n.gw.Deliver(r.Context(), req, hopsOf(r))
	if err != nil {
		return err
	}
	return respond(w, res)
}

// pathID reads and checks an id from the URL path. chi matches against the
// raw (escaped) path only when the request has one, so only then is the
// parameter still escaped; unescaping an already decoded one would turn
// "100%41" into "100A".
func pathID(r *http.Request, name string, max int) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		var err error
		if v, err = url.PathUnescape(v); err != nil {
			return "", wire.FieldError(wire.CodeInvalidField, name, name+" is not a valid URL path segment")
		}
	}
	if err := wire.CheckID(v, name, max); err != nil {
		return "", err
	}
	return v, nil
}

type participantBody struct {
	ParticipantType *string `json:"participant_type"`
	GatewayURL      *string `json:"gateway_url"`
}

func (n *Node) handlePutParticipant(w http.ResponseWriter, r *http.Request) error {
	sessionID, err := pathID(r, "session_id", ident.MaxSessionID)
	if err != nil {
		return err
	}
	participantID, err := pathID(r, "participant_id", ident.MaxParticipantID)
	if err != nil {
		return err
	}
	cred := credentialFrom(r.Context())
	if err := firstError(cred.actAs(participantID, "participant_id"), cred.useSession(sessionID)); err != nil {
		return err
	}
	body, err := readBody(w, r, n.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var pb participantBody
	if len(body) > 0 {
		if err := wire.DecodeJSON(body, &pb); err != nil {
			return err
		}
	}
	ptype := "ai"
	if pb.ParticipantType != nil {
		ptype = *pb.ParticipantType
		if ptype != "human" && ptype != "ai" {
			return wire.FieldError(wire.CodeInvalidField, "participant_type", `participant_type must be "human" or "ai"`)
		}
	}
	if pb.GatewayURL != nil {
		if err := wire.CheckGatewayURL(*pb.GatewayURL, "gateway_url"); err != nil {
			return err
		}
		if err := cred.fullRights(); err != nil {
			return err
		}
		if err := n.gw.AddExternal(participantID, ptype, *pb.GatewayURL, sessionID, cred.externalOwner()); err != nil {
			return err
		}
	} else if err := n.gw.AddParticipant(r.Context(), participantID, ptype, sessionID, hopsOf(r)); err != nil {
		return err
	}
	return respond(w, map[string]string{"status": "ok", "session_id": sessionID, "participant_id": participantID})
}

func (n *Node) handleDeleteParticipant(w http.ResponseWriter, r *http.Request) error {
	sessionID, err := pathID(r, "session_id", ident.MaxSessionID)
	if err != nil {
		return err
	}
	participantID, err := pathID(r, "participant_id", ident.MaxParticipantID)
	if err != nil {
		return err
	}
	cred := credentialFrom(r.Context())
	if err := firstError(cred.actAs(participantID, "participant_id"), cred.useSession(sessionID)); err != nil {
		return err
	}
	if err := n.gw.RemoveParticipant(r.Context(), participantID, sessionID, hopsOf(r)); err != nil {
		return err
	}
	return respond(w, map[string]string{"status": "ok", "session_id": sessionID, "participant_id": participantID})
}

type sessionView struct {
	SessionID    string            `json:"session_id"`
	Participants []participantView `json:"participants"`
}

type participantView struct {
	ParticipantID   string `json:"participant_id"`
	ParticipantType string `json:"participant_type,omitempty"`
	Node            string `json:"node,omitempty"`
	GatewayURL      string `json:"gateway_url,omitempty"`
	Online          bool   `json:"online"`
}

func (n *Node) handleGetSession(w http.ResponseWriter, r *http.Request) error {
	sessionID, err := pathID(r, "session_id", ident.MaxSessionID)
	if err != nil {
		return err
	}
	if err := credentialFrom(r.Context()).useSession(sessionID); err != nil {
		return err
	}
	entries, err := n.cluster.Session(r.Context(), sessionID, "")
	if err != nil {
		return routing.ErrDirectory("")
	}
	if len(entries) == 0 {
		return wire.NewError(http.StatusNotFound, "session_not_found", "", "the session has no participant")
	}
	// The session's records say who is in it and where; whether a member
	// is online is in its participant record, kept current by its home.
	online, err := n.onlineOf(r.Context(), entries)
	if err != nil {
		return routing.ErrDirectory("")
	}
	view := sessionView{SessionID: sessionID, Participants: make([]participantView, 0, len(entries))}
	for _, e := range entries {
		pv := participantView{ParticipantID: e.Participant, ParticipantType: e.Type, GatewayURL: e.GatewayURL,
			Online: online[placement{e.Participant, e.Node}]}
		if e.GatewayURL == "" {
			pv.Node = e.Node
		}
		view.Participants = append(view.Participants, pv)
	}
	return respond(w, view)
}

// placement is one participant on one node.
type placement struct{ participant, node string }

// onlineOf says which of a session's members are online, from their
// participant records (one lookup per owner node for all of them).
func (n *Node) onlineOf(ctx context.Context, members []membership.Entry) (map[placement]bool, error) {
	ids := make([]string, 0, len(members))
	for _, e := range members {
		if len(ids) == 0 || ids[len(ids)-1] != e.Participant { // sorted by participant
			ids = append(ids, e.Participant)
		}
	}
	found, err := n.cluster.Participants(ctx, ids)
	online := make(map[placement]bool, len(members))
	for _, es := range found {
		for _, e := range es {
			online[placement{e.Participant, e.Node}] = e.Online
		}
	}
	return online, err
}

func (n *Node) handleMembers(w http.ResponseWriter, _ *http.Request) error {
	return respond(w, struct {
		Members []membership.Member `json:"members"`
	}{n.cluster.Members()})
}

// connectionCapRetry is the Retry-After of an attach refused by a
// per-participant or per-credential cap (seconds): a slot frees when one of
// the client's own connections closes, which a reconnecting client's old
// connection usually does within a second or two.
const connectionCapRetry = 2

// Local participants are listed by id, at most limit (query, default
// defaultParticipantsLimit, at most maxParticipantsLimit) of them.
const (
	defaultParticipantsLimit = 100
	maxParticipantsLimit     = 1000
)

type localParticipant struct {
	ParticipantID   string   `json:"participant_id"`
	ParticipantType string   `json:"participant_type"`
	Sessions        []string `json:"sessions"`
	Online          bool     `json:"online"`
}

// handleLocalParticipants lists the participants homed on this node (GET
// /v1/gateway/participants, API keys only): the first limit by id, after
// the id given as after (paging), with the total.
func (n *Node) handleLocalParticipants(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := defaultParticipantsLimit
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > maxParticipantsLimit {
			return wire.FieldError(wire.CodeInvalidField, "limit", "limit must be an integer from 1 to "+strconv.Itoa(maxParticipantsLimit))
		}
		limit = l
	}
	after := q.Get("after")
	ids := n.hub.IDs()
	slices.Sort(ids)
	total := len(ids)
	start, _ := slices.BinarySearch(ids, after)
	if start < len(ids) && after != "" && ids[start] == after {
		start++
	}
	ids = ids[start:]
	truncated := len(ids) > limit
	if truncated {
		ids = ids[:limit]
	}
	out := make([]localParticipant, 0, len(ids))
	for _, id := range ids {
		p := n.hub.Lookup(id)
		if p == nil { // gone since IDs
			continue
		}
		info := p.Info()
		if info.Sessions == nil {
			info.Sessions = []string{}
		}
		out = append(out, localParticipant{ParticipantID: info.ID, ParticipantType: info.Type, Sessions: info.Sessions, Online: info.Online})
	}
	return respond(w, struct {
		Node         string             `json:"node"`
		Total        int                `json:"total"`
		Truncated    bool               `json:"truncated"`
		Participants []localParticipant `json:"participants"`
	}{n.cfg.NodeName, total, truncated, out})
}

// handleAttach validates an attach and hands the connection to the hub.
func (n *Node) handleAttach(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if v := q.Get("observe"); v == "1" || v == "true" {
		return n.handleObserve(w, r)
	}
	req := ws.AttachRequest{Batch: q.Get("batch") == "1" || q.Get("batch") == "true"}
	req.ParticipantID = q.Get("participant_id")
	if !q.Has("participant_id") {
		return wire.FieldError(wire.CodeMissingField, "participant_id", "participant_id is required")
	}
	if err := wire.CheckID(req.ParticipantID, "participant_id", ident.MaxParticipantID); err != nil {
		return err
	}
	req.ParticipantType = "ai"
	if t := q.Get("participant_type"); t != "" {
		if t != "human" && t != "ai" {
			return wire.FieldError(wire.CodeInvalidField, "participant_type", `participant_type must be "human" or "ai"`)
		}
		req.ParticipantType = t
	}
	for _, s := range q["session_id"] {
		if err := wire.CheckID(s, "session_id", ident.MaxSessionID); err != nil {
			return err
		}
		req.Sessions = append(req.Sessions, s)
	}
	if v := q.Get("resume_from"); v != "" {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return wire.FieldError(wire.CodeInvalidField, "resume_from", "resume_from must be a non-negative integer seq")
		}
		req.ResumeFrom = &seq
	}
	cred := credentialFrom(r.Context())
	req.Credential = cred
	// The connection's frames draw from the rate-limit bucket its attach
	// drew from (wsBackend.allowFrame).
	req.RateKey = cred.rateKey(r)
	if cred.Kind != credNone { // with authentication off there is no credential to count
		req.CredentialKey = req.RateKey
	}
	opts := &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled, OriginPatterns: n.cfg.AllowedOrigins}
	policy := cred.actAs(req.ParticipantID, "participant_id")
	for _, s := range req.Sessions {
		policy = firstError(policy, cred.useSession(s))
	}
	if policy != nil { // a browser cannot read an HTTP status: close 1008 says why
		if c, err := websocket.Accept(w, r, opts); err == nil {
			_ = c.Close(websocket.StatusPolicyViolation, truncateReason(policy.Detail))
		}
		return nil
	}
	if n.draining.Load() {
		return wire.NewError(http.StatusServiceUnavailable, "draining", "", "this node is shutting down; attach to another node")
	}
	if n.hub.Lookup(req.ParticipantID) == nil {
		if homes, sessions, typ := n.gw.OtherHomes(r.Context(), req.ParticipantID); len(homes) > 0 {
			if typ == "" {
				typ = req.ParticipantType
			}
			if err := n.gw.Takeover(r.Context(), req.ParticipantID, typ, sessions, homes, true); err != nil {
				return err
			}
		}
	}
	err := n.hub.Attach(w, r, req, opts, n.cfg.MaxConnections)
	switch {
	case errors.Is(err, ws.ErrDraining):
		return wire.NewError(http.StatusServiceUnavailable, "draining", "", "this node is shutting down; attach to another node")
	case errors.Is(err, ws.ErrParticipantMoved): // the takeover it waited for gave the participant back
		return routing.ErrMoving
	case errors.Is(err, ws.ErrTooManyConnections):
		return wire.NewError(http.StatusServiceUnavailable, "too_many_connections", "", "this node holds its maximum of connections; try another node")
	case errors.Is(err, ws.ErrTooManyParticipantConnections):
		e := wire.NewError(http.StatusTooManyRequests, "too_many_connections", "participant_id",
			"this participant holds its maximum of connections on this node (--max-connections-per-participant); close one first")
		e.RetryAfter = connectionCapRetry
		return e
	case errors.Is(err, ws.ErrTooManyCredentialConnections):
		e := wire.NewError(http.StatusTooManyRequests, "too_many_connections", "",
			"this credential holds its maximum of connections on this node (--max-connections-per-credential); close one first")
		e.RetryAfter = connectionCapRetry
		return e
	case err != nil:
		n.log.Debug("websocket attach failed", "participant", req.ParticipantID, "err", err)
	}
	return nil // Accept answered failures itself; a served connection lives on in its own goroutine
}

// handleDirectoryPush applies a peer's directory change (internal to the
// cluster: a peer pushes its participants' changes here and waits for the
// answer, so that a participant is routable cluster-wide once its attach
// is welcomed).
func (n *Node) handleDirectoryPush(w http.ResponseWriter, r *http.Request) error {
	if n.gossip == nil {
		return wire.NewError(http.StatusNotFound, "not_found", "", "this node is not part of a cluster")
	}
	body, err := readBody(w, r, maxDirectoryPushBytes)
	if err != nil {
		return err
	}
	switch err := n.gossip.HandlePush(body, r.Header.Get(signatureHeader)); {
	case errors.Is(err, membership.ErrNotSender):
		return errForbidden("", "the directory message is not signed by the node it names: "+
			"each node is the only writer of its entries")
	case errors.Is(err, membership.ErrUnknownNode): // the sender asks again once gossip told us of it
		return wire.NewError(http.StatusConflict, "unknown_node", "", "the directory message's node is not a member here (yet)")
	case errors.Is(err, membership.ErrDigestMismatch): // the sender re-sends what this node should hold
		return wire.NewError(http.StatusConflict, "digest_mismatch", "", "the records held here do not match the digest")
	case err != nil:
		return wire.NewError(http.StatusBadRequest, wire.CodeInvalidJSON, "", "the directory message does not decode: "+err.Error())
	}
	wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

// handleDirectoryLookup answers a peer's lookup of directory records this
// node keeps as their owner (internal to the cluster, like the push).
func (n *Node) handleDirectoryLookup(w http.ResponseWriter, r *http.Request) error {
	if n.gossip == nil {
		return wire.NewError(http.StatusNotFound, "not_found", "", "this node is not part of a cluster")
	}
	body, err := readBody(w, r, maxLookupBytes)
	if err != nil {
		return err
	}
	ans, err := n.gossip.HandleLookup(body)
	if err != nil {
		return wire.NewError(http.StatusBadRequest, wire.CodeInvalidJSON, "", "the lookup does not decode: "+err.Error())
	}
	wire.WriteJSON(w, http.StatusOK, ans)
	return nil
}

// firstError returns the first non-nil error.
func firstError(errs ...*wire.Error) *wire.Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// truncateReason fits a close reason in the 123 bytes a close frame allows.
func truncateReason(s string) string {
	if len(s) <= 120 {
		return s
	}
	return s[:120]
}
