package routing

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
)

// External participants live behind a gateway outside the cluster. The node
// that learned of one (a submit with sender_gateway_url, a PUT with
// gateway_url) registers it here and owns its directory entry. The registry
// is bounded four ways: the node's cap, a cap per credential, the sessions
// cap of any participant, and an idle TTL; a participant whose gateway keeps
// failing is dropped (the circuit breaker), so it cannot make its sessions
// answer 502 for ever.

// ExternalLimits are the registry's settings (sidecar.Config has their flags).
type ExternalLimits struct {
	Max           int           // external participants on this node
	PerCredential int           // of them registered by one credential
	Sessions      int           // sessions per external participant
	TTL           time.Duration // idle time after which one expires
	FailureLimit  int           // consecutive failed deliveries that drop one
	RetryAfter    time.Duration // how long another node's failing one is not routed to
}

// externalParticipant is one registered external participant.
type externalParticipant struct {
	// entry is what the directory holds. Its Sessions slice (sorted) is
	// replaced, never modified, when a session is added or removed: the
	// directory and readers may still hold the old one.
	entry membership.Entry
	// sessions is entry.Sessions as a set: a submit checks it in O(1).
	sessions map[string]struct{}
	owner    string    // the credential that registered it; "" when authentication is off
	lastUsed time.Time // the last registration, refresh or delivered event
	failures int       // consecutive failed deliveries to its gateway
}

// externals are the external participants this node registered. Growth:
// byID is bounded by limits.Max, perOwner by the number of entries of
// byID, each entry's sessions by limits.Sessions. Directory writes happen
// under mu (PutLocal and DeleteLocal queue and never block), so the
// directory sees the registry's changes in the order they were made.
type externals struct {
	mu       sync.Mutex
	byID     map[string]*externalParticipant
	perOwner map[string]int
	limits   ExternalLimits
	cluster  membership.Cluster
	// others is the circuit breaker for the external participants other
	// nodes own, which this node delivers to but cannot drop.
	others breakers
}

func newExternals(limits ExternalLimits, cluster membership.Cluster) *externals {
	return &externals{byID: map[string]*externalParticipant{}, perOwner: map[string]int{}, limits: limits, cluster: cluster,
		others: breakers{byKey: map[breakerKey]*breakerState{}, limits: limits}}
}

// externalRequest is one registration: participant id of type typ (empty:
// keep what it was) at gateway url, in session (may be empty), by owner.
// field names the request's field for errors: sender_gateway_url or
// gateway_url.
type externalRequest struct {
	id, typ, url, session, owner, field string
}

// admit checks, without changing anything, that req could be registered
// now: a submit validates before it delivers and registers after.
func (x *externals) admit(req externalRequest) *wire.Error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.admitLocked(req)
}

func (x *externals) admitLocked(req externalRequest) *wire.Error {
	if p, ok := x.byID[req.id]; ok {
		if _, in := p.sessions[req.session]; req.session != "" && !in && len(p.sessions) >= x.limits.Sessions {
			return wire.FieldError("too_many_sessions", "session_id",
				"the external participant is already in the maximum number of sessions (--max-sessions-per-participant)")
		}
		return nil
	}
	if len(x.byID) >= x.limits.Max {
		return wire.NewError(http.StatusServiceUnavailable, "too_many_external_participants", req.field,
			"this node holds its maximum of external participants (--max-external-participants); retry later or on another node")
	}
	if req.owner != "" && x.perOwner[req.owner] >= x.limits.PerCredential {
		return wire.NewError(http.StatusServiceUnavailable, "too_many_external_participants", req.field,
			"this credential has registered its maximum of external participants on this node "+
				"(--max-externals-per-credential); they expire when idle (--external-ttl)")
	}
	return nil
}

// register adds req (or refreshes it) at time now. A registration that
// changes nothing (same gateway, session already held) only refreshes the
// idle clock: it costs O(1) and publishes nothing.
func (x *externals) register(req externalRequest, now time.Time) *wire.Error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.admitLocked(req); err != nil {
		return err
	}
	p, ok := x.byID[req.id]
	if !ok {
		p = &externalParticipant{sessions: map[string]struct{}{}, owner: req.owner,
			entry: membership.Entry{Participant: req.id, Type: "ai", Online: true}}
		x.byID[req.id] = p
		x.perOwner[req.owner]++
	}
	p.lastUsed = now
	_, inSession := p.sessions[req.session]
	changed := !ok || p.entry.GatewayURL != req.url || (req.typ != "" && req.typ != p.entry.Type) ||
		(req.session != "" && !inSession)
	if !changed {
		return nil
	}
	if p.entry.GatewayURL != req.url {
		p.failures = 0 // a new gateway starts with a clean record
	}
	p.entry.GatewayURL = req.url
	if req.typ != "" {
		p.entry.Type = req.typ
	}
	if req.session != "" && !inSession {
		p.sessions[req.session] = struct{}{}
		i, _ := slices.BinarySearch(p.entry.Sessions, req.session)
		p.entry.Sessions = slices.Insert(slices.Clone(p.entry.Sessions), i, req.session)
	}
	x.cluster.PutLocal(p.entry)
	return nil
}

// remove takes session away from external participant id; false when it
// is not an external participant of that session here.
func (x *externals) remove(id, session string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, found := x.byID[id]
	if !found {
		return false
	}
	if _, in := p.sessions[session]; !in {
		return false
	}
	if len(p.sessions) == 1 {
		x.dropLocked(id, p)
		return true
	}
	delete(p.sessions, session)
	p.entry.Sessions = slices.DeleteFunc(slices.Clone(p.entry.Sessions), func(s string) bool { return s == session })
	x.cluster.PutLocal(p.entry)
	return true
}

// dropLocked forgets p (registered as id) here and in the directory.
func (x *externals) dropLocked(id string, p *externalParticipant) {
	delete(x.byID, id)
	if x.perOwner[p.owner]--; x.perOwner[p.owner] <= 0 {
		delete(x.perOwner, p.owner)
	}
	x.cluster.DeleteLocal(id)
}

// expire drops every external participant idle for longer than the TTL at
// now and returns how many it dropped, and forgets old failures of other
// nodes' ones. It visits each entry once: the work of a sweep is bounded by
// twice limits.Max.
func (x *externals) expire(now time.Time) int {
	x.others.prune(now)
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for id, p := range x.byID {
		if now.Sub(p.lastUsed) > x.limits.TTL {
			x.dropLocked(id, p)
			n++
		}
	}
	return n
}

// delivered records the outcome of one delivery to external participant
// id's gateway at url (an entry of another node's is not ours to judge:
// nothing is recorded). A success resets its failures and counts as use;
// a failure that makes limits.FailureLimit in a row drops it, and tripped
// says so.
func (x *externals) delivered(id, url string, ok bool, now time.Time) (tripped bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, found := x.byID[id]
	if !found || p.entry.GatewayURL != url { // re-registered elsewhere meanwhile
		return false
	}
	if ok {
		p.failures, p.lastUsed = 0, now
		return false
	}
	p.failures++
	if p.failures < x.limits.FailureLimit {
		return false
	}
	x.dropLocked(id, p)
	return true
}

// count is how many external participants are registered here.
func (x *externals) count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byID)
}

// sweepInterval is how often expired external participants are looked for:
// a tenth of the TTL, so one outlives it by at most 10%, between 10 ms and a
// minute.
func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Minute)
}

// SweepExternals drops idle external participants until ctx ends. The
// node's tasks own it: Shutdown cancels ctx first and waits for it.
func (g *Gateway) SweepExternals(ctx context.Context) {
	t := time.NewTicker(sweepInterval(g.externals.limits.TTL))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() == nil { // both ready: stopping wins
				g.ExpireExternals(g.now())
			}
		}
	}
}

// ExpireExternals drops the external participants idle at now.
func (g *Gateway) ExpireExternals(now time.Time) {
	if n := g.externals.expire(now); n > 0 {
		g.metrics.ExternalsDropped.WithLabelValues("expired").Add(float64(n))
		g.log.Debug("external participants expired", "count", n)
	}
}

// checkGatewayTarget checks a gateway URL (field: sender_gateway_url or
// gateway_url) before anything is delivered or registered: it is not a
// member of this cluster, and an allow-list prefix admits it.
func (g *Gateway) checkGatewayTarget(raw, field string) *wire.Error {
	if g.pointsAtMember(raw) { // first: whatever the allow-list says
		return wire.FieldError("gateway_url_not_allowed", field, field+
			" points at a node of this cluster; give the participant's own gateway, or attach the participant to a node")
	}
	if !g.gatewayAllowed(raw) {
		return ErrGatewayNotAllowed(field)
	}
	return nil
}

// AddExternal registers an external participant of session at url (a PUT
// with gateway_url), on behalf of owner.
func (g *Gateway) AddExternal(id, typ, url, session, owner string) error {
	req := externalRequest{id: id, typ: typ, url: url, session: session, owner: owner, field: "gateway_url"}
	if err := g.checkGatewayTarget(url, req.field); err != nil {
		return err
	}
	if err := g.registerExternal(req); err != nil {
		return err
	}
	return nil
}

// pointsAtMember reports whether raw is on a cluster member's origin (the
// same scheme, host and port, default ports made explicit) under its path.
// A member answers an external delivery 401 (the external key is not a
// cluster credential) or 404, so an entry there only fails; it is refused
// instead of being routed.
func (g *Gateway) pointsAtMember(raw string) bool {
	u, ok := gatewayBase(raw)
	if !ok {
		return false
	}
	for _, m := range g.cluster.Members() {
		mu, ok := gatewayBase(m.URL)
		if ok && u.Scheme == mu.Scheme && u.Host == mu.Host &&
			(mu.Path == "/" || u.Path == mu.Path || strings.HasPrefix(u.Path, mu.Path+"/")) {
			return true
		}
	}
	return false
}

// gatewayBase is raw normalised for comparison: lower-case scheme and host,
// the port always present, the path cleaned of dot segments and of a
// trailing slash ("/" for none).
func gatewayBase(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, false
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	p := path.Clean("/" + u.Path)
	return &url.URL{Scheme: scheme, Host: host + ":" + port, Path: p}, true
}

// registerExternal registers req now (after checkGatewayTarget and, for a
// submit, admitSender and the submit's acceptance).
func (g *Gateway) registerExternal(req externalRequest) *wire.Error {
	return g.externals.register(req, g.now())
}

// recordExternalDelivery feeds the circuit breaker with the outcome of one
// delivery to external participant e: one this node owns is dropped when it
// trips; one another node owns is not routed to from here for a while.
func (g *Gateway) recordExternalDelivery(e membership.Entry, ok bool) {
	if e.Node != g.self {
		if g.externals.others.record(e, ok, g.now()) {
			g.metrics.ExternalsDropped.WithLabelValues("suspended").Inc()
			g.log.Warn("an external participant of another node keeps failing; not routed to from this node for a while",
				"participant", e.Participant, "owner", e.Node, "failures", g.externals.limits.FailureLimit,
				"retry_after", g.externals.limits.RetryAfter)
		}
		return
	}
	if g.externals.delivered(e.Participant, e.GatewayURL, ok, g.now()) {
		g.metrics.ExternalsDropped.WithLabelValues("failing").Inc()
		g.log.Warn("an external participant was dropped: its gateway kept failing",
			"participant", e.Participant, "failures", g.externals.limits.FailureLimit)
	}
}

// externalRoutable reports whether resolve may route to external
// participant e: always for one this node owns (its breaker drops it
// instead), and for another node's unless its breaker is open.
func (g *Gateway) externalRoutable(e membership.Entry) bool {
	return e.Node == g.self || g.externals.others.allow(e, g.now())
}

// breakers is the circuit breaker of the external participants other nodes
// own: their owner keeps their registration, and does not see the
// deliveries that fail here. After limits.FailureLimit failures in a row
// one is skipped for limits.RetryAfter; then one delivery probes it again
// (half-open): success closes the breaker, failure opens it again. Growth:
// byKey is bounded by limits.Max (failures past it are not tracked) and
// entries without a failure for max(ttl, retryAfter) are pruned by the
// sweeper.
type breakers struct {
	mu     sync.Mutex
	byKey  map[breakerKey]*breakerState
	limits ExternalLimits
}

type breakerKey struct{ node, participant, url string }

type breakerState struct {
	failures  int       // in a row
	last      time.Time // the last failure
	openUntil time.Time // not routed to before (once failures reached the limit)
}

func keyOf(e membership.Entry) breakerKey { return breakerKey{e.Node, e.Participant, e.GatewayURL} }

// allow reports whether e may be delivered to at now. An open breaker whose
// time is up lets one delivery through and stays open for another period
// meanwhile, so concurrent submits do not all probe.
func (b *breakers) allow(e membership.Entry, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.byKey[keyOf(e)]
	if st == nil || st.failures < b.limits.FailureLimit {
		return true
	}
	if now.Before(st.openUntil) {
		return false
	}
	st.openUntil = now.Add(b.limits.RetryAfter)
	return true
}

// record notes a delivery to e; tripped is true when this failure opened
// the breaker.
func (b *breakers) record(e membership.Entry, ok bool, now time.Time) (tripped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := keyOf(e)
	if ok {
		delete(b.byKey, k)
		return false
	}
	st := b.byKey[k]
	if st == nil {
		if len(b.byKey) >= b.limits.Max {
			return false
		}
		st = &breakerState{}
		b.byKey[k] = st
	}
	st.failures++
	st.last = now
	if st.failures < b.limits.FailureLimit {
		return false
	}
	st.openUntil = now.Add(b.limits.RetryAfter)
	return st.failures == b.limits.FailureLimit
}

// prune forgets breakers without a failure for max(ttl, retryAfter).
func (b *breakers) prune(now time.Time) {
	keep := max(b.limits.TTL, b.limits.RetryAfter)
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, st := range b.byKey {
		if now.Sub(st.last) > keep {
			delete(b.byKey, k)
		}
	}
}
