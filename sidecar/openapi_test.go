package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard-gw/switchyard/docs"
	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// The OpenAPI conformance test: docs/openapi.yaml is loaded and validated
// with kin-openapi, real nodes on 127.0.0.1 get real requests covering every
// endpoint and the main error answers, and each request and each answer is
// validated against the document. A request the server refuses for a rule
// the document can express must be refused by the document too; every
// answer, whatever its status, must be documented. Every route the router
// registers must be documented, and every documented operation exercised.

// oaVerdict is what the document must say of a request.
type oaVerdict int

const (
	docAccepts oaVerdict = iota // a valid request by the document
	docRejects                  // the document refuses it too (schema, content type, security)
	docEither                   // the document cannot tell (duplicate JSON keys: the decoder decides)
)

// oaSuite holds the loaded document and records which operations the test
// exercised.
type oaSuite struct {
	doc    *openapi3.T
	router routers.Router

	mu   sync.Mutex
	seen map[string]bool // "METHOD /path/{template}"
}

func oaLoad(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(docs.OpenAPIYAML)
	require.NoError(t, err, "docs/openapi.yaml does not load")
	require.True(t, doc.IsOpenAPI31OrLater(), "the document is OpenAPI 3.1")
	require.NoError(t, doc.Validate(loader.Context, openapi3.EnableExamplesValidation(),
		openapi3.EnableSchemaPatternValidation(), openapi3.EnableSchemaDefaultsValidation()),
		"docs/openapi.yaml is not a valid OpenAPI document")
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return doc, router
}

func newOASuite(t *testing.T) *oaSuite {
	doc, router := oaLoad(t)
	return &oaSuite{doc: doc, router: router, seen: map[string]bool{}}
}

// authenticate stands for the security schemes: it checks that the request
// presents a credential where the scheme says (the node decides whether it
// is valid).
func oaAuthenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	switch s := in.SecurityScheme; s.Type {
	case "http":
		if !strings.EqualFold(s.Scheme, "bearer") || bearer(r) == "" {
			return in.NewError(errors.New("no bearer credential in Authorization"))
		}
	case "apiKey":
		if s.In != "query" || r.URL.Query().Get(s.Name) == "" {
			return in.NewError(fmt.Errorf("no %s in the query", s.Name))
		}
	default:
		return in.NewError(fmt.Errorf("unexpected security scheme type %q", s.Type))
	}
	return nil
}

func oaOptions() *openapi3filter.Options {
	return &openapi3filter.Options{AuthenticationFunc: oaAuthenticate, IncludeResponseStatus: true, MultiError: true}
}

// validateRequest finds req's operation in the document and validates req
// against it; it returns the input for validating the answer.
func (s *oaSuite) validateRequest(t *testing.T, req *http.Request, verdict oaVerdict) *openapi3filter.RequestValidationInput {
	t.Helper()
	route, params, err := s.router.FindRoute(req)
	require.NoError(t, err, "%s %s is not in the document", req.Method, req.URL.Path)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: oaOptions()}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch verdict {
	case docAccepts:
		require.NoError(t, err, "the document refuses %s %s", req.Method, req.URL)
	case docRejects:
		require.Error(t, err, "the document accepts %s %s, which the node refuses", req.Method, req.URL)
	}
	s.mu.Lock()
	s.seen[route.Method+" "+route.Path] = true
	s.mu.Unlock()
	return in
}

// validateResponse validates an answer against the operation of in.
func (s *oaSuite) validateResponse(t *testing.T, in *openapi3filter.RequestValidationInput, status int, header http.Header, body []byte) {
	t.Helper()
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: oaOptions()}
	out.SetBodyBytes(body)
	require.NoError(t, openapi3filter.ValidateResponse(context.Background(), out),
		"the answer to %s %s does not match the document: %d %s", in.Request.Method, in.Request.URL.Path, status, body)
}

// call sends a request with do (main_test.go), after validating the same
// request built by newRequest, and validates the answer, which must have
// status want.
func (s *oaSuite) call(t *testing.T, want int, verdict oaVerdict, method, u string, body []byte, header map[string]string) apiResponse {
	t.Helper()
	req, err := newRequest(context.Background(), method, u, body, header)
	require.NoError(t, err)
	in := s.validateRequest(t, req, verdict)
	r := do(t, method, u, body, header)
	require.Equal(t, want, r.Status, "%s %s answered %s", method, u, r.Raw)
	s.validateResponse(t, in, r.Status, r.Header, r.Raw)
	return r
}

// post is call for a POST of v (see encodeBody).
func (s *oaSuite) post(t *testing.T, want int, verdict oaVerdict, u string, v any, header map[string]string) apiResponse {
	t.Helper()
	body, err := encodeBody(v)
	require.NoError(t, err)
	return s.call(t, want, verdict, http.MethodPost, u, body, header)
}

// attach dials the WebSocket endpoint of n with query and header, after
// validating the handshake request, and validates the answer: a 101 (the
// connection is returned, closed when the test ends) or want.
func (s *oaSuite) attach(t *testing.T, n *Node, want int, verdict oaVerdict, query url.Values, header http.Header) *client {
	t.Helper()
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req, err := http.NewRequest(http.MethodGet, n.URL()+wsPath+"?"+query.Encode(), nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	in := s.validateRequest(t, req, verdict)

	conn, resp, err := dial(n, "", query, header)
	require.NotNil(t, resp, "no answer to the attach: %v", err)
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
		body, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	require.Equal(t, want, resp.StatusCode, "attach answered %s", body)
	s.validateResponse(t, in, resp.StatusCode, resp.Header, body)
	if want != http.StatusSwitchingProtocols {
		require.Error(t, err)
		return nil
	}
	require.NoError(t, err)
	return testkit.NewWS(t, conn)
}

// frame reads the next WebSocket frame of c and validates it against
// ServerFrame and against the schema of its type.
func (s *oaSuite) frame(t *testing.T, c *client, wantType string) map[string]any {
	t.Helper()
	f := c.Next()
	require.Equal(t, wantType, f["type"], "frame: %v", f)
	s.validateFrame(t, f)
	return f
}

func (s *oaSuite) validateFrame(t *testing.T, f map[string]any) {
	t.Helper()
	schemas := map[string]string{"welcome": "WelcomeFrame", "event": "EventFrame", "gap": "GapFrame",
		"result": "ResultFrame", "error": "ErrorFrame"}
	typ, _ := f["type"].(string)
	name, ok := schemas[typ]
	require.True(t, ok, "a server frame of an undocumented type: %v", f)
	for _, n := range []string{"ServerFrame", name} {
		ref := s.doc.Components.Schemas[n]
		require.NotNil(t, ref, "components.schemas.%s", n)
		require.NoError(t, s.doc.ValidateSchemaJSON(ref.Value, f, openapi3.EnableJSONSchema2020()),
			"a %s frame does not match %s: %v", typ, n, f)
	}
}

// validateClientFrame checks a frame the test sends against ClientFrame.
func (s *oaSuite) validateClientFrame(t *testing.T, f map[string]any) {
	t.Helper()
	b, err := json.Marshal(f)
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(b, &v))
	require.NoError(t, s.doc.ValidateSchemaJSON(s.doc.Components.Schemas["ClientFrame"].Value, v,
		openapi3.EnableJSONSchema2020()), "client frame %s", b)
}

// deadGatewayURL is a loopback URL where nothing listens.
func deadGatewayURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	return u
}

func TestOpenAPIDocumentServedAndEveryRouteDocumented(t *testing.T) {
	doc, router := oaLoad(t)
	n := startNode(t, Config{APIKeys: []string{"k"}})

	t.Run("GET /openapi.json serves the same document", func(t *testing.T) {
		r := do(t, http.MethodGet, n.URL()+"/openapi.json", nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		assert.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "application/json"))
		var served any
		require.NoError(t, json.Unmarshal(r.Raw, &served))
		var fromYAML any
		require.NoError(t, yaml.Unmarshal(docs.OpenAPIYAML, &fromYAML))
		b, err := json.Marshal(fromYAML) // the YAML document as JSON, independently of the node's converter
		require.NoError(t, err)
		var want any
		require.NoError(t, json.Unmarshal(b, &want))
		assert.Equal(t, want, served)

		loader := openapi3.NewLoader()
		servedDoc, err := loader.LoadFromData(r.Raw)
		require.NoError(t, err)
		require.NoError(t, servedDoc.Validate(loader.Context))
		assert.Equal(t, doc.Info.Version, servedDoc.Info.Version)
	})

	// Every route of the router, walked as chi registered it, is in the
	// document, and every documented operation is a route.
	t.Run("routes and document match", func(t *testing.T) {
		mux, ok := n.srv.Handler.(chi.Routes)
		require.True(t, ok, "the node's handler is a chi router")
		registered := map[string][]string{} // route → methods
		require.NoError(t, chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			registered[route] = append(registered[route], method)
			return nil
		}))
		require.NotEmpty(t, registered)
		allMethods := []string{http.MethodConnect, http.MethodDelete, http.MethodGet, http.MethodHead,
			http.MethodOptions, http.MethodPatch, http.MethodPost, http.MethodPut, http.MethodTrace}
		for route, methods := range registered {
			item := doc.Paths.Value(route)
			require.NotNil(t, item, "the route %s is not in docs/openapi.yaml", route)
			anyMethod := true // r.Handle: every method chi knows; GET is documented
			for _, m := range allMethods {
				anyMethod = anyMethod && slices.Contains(methods, m)
			}
			if anyMethod {
				assert.NotNil(t, item.Get, "the route %s (any method) has no GET in the document", route)
				continue
			}
			for _, m := range methods {
				assert.NotNil(t, item.GetOperation(m), "%s %s is not in docs/openapi.yaml", m, route)
			}
		}
		for path, item := range doc.Paths.Map() {
			methods, ok := registered[path]
			require.True(t, ok, "docs/openapi.yaml documents %s, which is not a route", path)
			for m := range item.Operations() {
				assert.Contains(t, methods, m, "docs/openapi.yaml documents %s %s, which is not a route", m, path)
			}
		}
	})

	// Paths that are no endpoint answer 404, and endpoints asked with a
	// method they do not take answer 405; the document agrees, and the
	// bodies are the documented NotFound and MethodNotAllowed answers.
	t.Run("unknown paths and methods", func(t *testing.T) {
		auth := bearerHeader("k")
		for _, tc := range []struct {
			method, path string
			status       int
			routeErr     error
			response     string
		}{
			{http.MethodGet, "/nope", http.StatusNotFound, routers.ErrPathNotFound, "NotFound"},
			{http.MethodGet, "/v1/gateway/nope", http.StatusNotFound, routers.ErrPathNotFound, "NotFound"},
			{http.MethodGet, "/v1/gateway/sessions/s/participants", http.StatusNotFound, routers.ErrPathNotFound, "NotFound"},
			{http.MethodGet, "/v1/gateway/events", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
			{http.MethodPut, "/v1/gateway/deliveries", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
			{http.MethodPost, "/v1/gateway/sessions/s", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
			{http.MethodPost, "/v1/gateway/ws", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
			{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
			{http.MethodPost, "/openapi.json", http.StatusMethodNotAllowed, routers.ErrMethodNotAllowed, "MethodNotAllowed"},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, n.URL()+tc.path, nil)
				require.NoError(t, err)
				_, _, err = router.FindRoute(req)
				require.ErrorIs(t, err, tc.routeErr)
				r := do(t, tc.method, n.URL()+tc.path, nil, auth)
				require.Equal(t, tc.status, r.Status, "%s", r.Raw)
				resp := doc.Components.Responses[tc.response].Value
				media := resp.Content.Get(r.Header.Get("Content-Type"))
				require.NotNil(t, media, "Content-Type %q", r.Header.Get("Content-Type"))
				var body any
				require.NoError(t, json.Unmarshal(r.Raw, &body))
				require.NoError(t, doc.ValidateSchemaJSON(media.Schema.Value, body, openapi3.EnableJSONSchema2020()),
					"%s", r.Raw)
				assert.NotEmpty(t, r.Header.Get("X-Request-Id"))
			})
		}
	})
}

func TestOpenAPIConformance(t *testing.T) {
	s := newOASuite(t)
	dead := deadGatewayURL(t)
	const adminKey = "admin-key"
	admin := bearerHeader(adminKey)
	n := startNode(t, Config{
		APIKeys: []string{adminKey}, TokenSecret: testSecret,
		AllowGateways:  []string{dead},
		ForwardTimeout: 300 * time.Millisecond, PeerAttemptTimeout: 100 * time.Millisecond,
		MaxBodyBytes: 8192, MaxMessageBytes: 1024, MaxExternalParticipants: 2, MailboxSize: 2,
	})
	events := n.URL() + "/v1/gateway/events"
	deliveries := n.URL() + "/v1/gateway/deliveries"
	sessions := n.URL() + "/v1/gateway/sessions/"
	alice := mint(t, "alice", []string{"s1"}, time.Hour)
	ev := func(sender, session string, extra ...any) map[string]any {
		e := map[string]any{"sender_id": sender, "sender_type": "ai", "event_type": "message", "session_id": session}
		for i := 0; i < len(extra); i += 2 {
			if extra[i+1] == nil {
				delete(e, extra[i].(string))
			} else {
				e[extra[i].(string)] = extra[i+1]
			}
		}
		return e
	}
	withHeader := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	// bob listens on s1 for the whole test; each subtest reads his frames.
	bob := s.attach(t, n, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"bob"}, "session_id": {"s1"}}, http.Header{"Authorization": {"Bearer " + adminKey}})
	s.frame(t, bob, "welcome")

	t.Run("attach", func(t *testing.T) {
		bob.ReportTo(t)

		// A participant token in the query, for browsers.
		c := s.attach(t, n, http.StatusSwitchingProtocols, docAccepts,
			url.Values{"participant_id": {"alice"}, "session_id": {"s1"}, "access_token": {alice}, "participant_type": {"human"}}, nil)
		w := s.frame(t, c, "welcome")
		assert.Equal(t, "alice", w["participant_id"])
		for _, f := range []map[string]any{
			{"type": "join", "id": "j1", "session_id": "s9"}, // not in the token's sessions: 403
			{"type": "submit", "id": "c1", "event": map[string]any{"event_type": "message", "session_id": "s1", "message": "over the socket"}},
			{"type": "leave", "id": "l1", "session_id": "s1"},
			{"type": "join", "id": "j2", "session_id": "s1"},
			{"type": "ack", "id": "a1", "seq": 0},
		} {
			s.validateClientFrame(t, f)
			c.Send(f)
			res := s.frame(t, c, "result")
			assert.Equal(t, f["id"], res["id"])
		}
		f := s.frame(t, bob, "event")
		assert.Equal(t, "over the socket", f["event"].(map[string]any)["message"])
		c.Send(map[string]any{"type": "nope"})
		s.frame(t, c, "error")
		c.Send(map[string]any{"type": "submit", "event": map[string]any{"sender_id": "mallory", "event_type": "m", "session_id": "s1"}})
		s.frame(t, c, "error")
		require.NoError(t, c.Conn.Close(websocket.StatusNormalClosure, ""))

		// A token attaching as someone else: upgraded, then closed 1008.
		c = s.attach(t, n, http.StatusSwitchingProtocols, docAccepts,
			url.Values{"participant_id": {"bob"}, "access_token": {alice}}, nil)
		assert.Equal(t, websocket.StatusPolicyViolation, c.CloseStatus())

		s.attach(t, n, http.StatusUnauthorized, docRejects, url.Values{"participant_id": {"x"}}, nil)
		s.attach(t, n, http.StatusUnauthorized, docAccepts, url.Values{"participant_id": {"x"}, "access_token": {"wrong"}}, nil)
		h := http.Header{"Authorization": {"Bearer " + adminKey}}
		// participant_id is optional in the document (an observer has
		// none); the node requires it of everyone else.
		s.attach(t, n, http.StatusUnprocessableEntity, docAccepts, url.Values{}, h)
		// An observer: API keys only, at least one session.
		o := s.attach(t, n, http.StatusSwitchingProtocols, docAccepts, url.Values{"observe": {"1"}, "session_id": {"s1"}}, h)
		assert.Equal(t, true, o.Next()["observer"])
		s.attach(t, n, http.StatusForbidden, docAccepts, url.Values{"observe": {"1"}, "session_id": {"s1"}, "access_token": {alice}}, nil)
		s.attach(t, n, http.StatusUnprocessableEntity, docAccepts, url.Values{"observe": {"1"}}, h)
		s.attach(t, n, http.StatusUnprocessableEntity, docRejects, url.Values{"participant_id": {"x"}, "participant_type": {"robot"}}, h)
		s.attach(t, n, http.StatusUnprocessableEntity, docRejects, url.Values{"participant_id": {"x"}, "resume_from": {"soon"}}, h)
		s.attach(t, n, http.StatusUnprocessableEntity, docRejects, url.Values{"participant_id": {strings.Repeat("p", 257)}}, h)
		s.attach(t, n, http.StatusForbidden, docAccepts, url.Values{"participant_id": {"x"}},
			http.Header{"Authorization": {"Bearer " + adminKey}, "Origin": {"https://evil.example.com"}})

		// Not a WebSocket handshake, and a bad one: the library's plain text.
		s.call(t, http.StatusUpgradeRequired, docRejects, http.MethodGet, n.URL()+wsPath+"?participant_id=x", nil, admin)
		s.call(t, http.StatusBadRequest, docRejects, http.MethodGet, n.URL()+wsPath+"?participant_id=x", nil,
			withHeader(admin, "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "12",
				"Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(make([]byte, 16))))
	})

	t.Run("submit", func(t *testing.T) {
		bob.ReportTo(t)
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		full := ev("alice", "s1", "message", "hello", "event_id", "c-1",
			"metadata", map[string]any{"k": "v", "n": 1, "deep": map[string]any{"a": []any{1, true, nil}}},
			"unknown_field", "ignored")
		r := s.post(t, http.StatusOK, docAccepts, events, full, withHeader(admin, "traceparent", tp, "X-Request-Id", "req-1"))
		assert.Equal(t, "c-1", r.Body["event_id"])
		assert.Equal(t, "req-1", r.Header.Get("X-Request-Id"))
		f := s.frame(t, bob, "event")
		assert.Equal(t, "hello", f["event"].(map[string]any)["message"])
		assert.Contains(t, f["traceparent"], "4bf92f3577b34da6a3ce929d0e0e4736")

		r = s.post(t, http.StatusOK, docAccepts, events, full, admin) // a retry
		assert.Equal(t, float64(1), r.Body["duplicates"])
		direct := ev("alice", "", "session_id", nil, "recipient_id", "bob", "message", "direct")
		s.post(t, http.StatusOK, docAccepts, events, direct, admin)
		s.frame(t, bob, "event")
		s.post(t, http.StatusOK, docAccepts, events, ev("alice", "s1"), withHeader(admin, "Content-Type", "application/json; charset=utf-8"))
		s.frame(t, bob, "event")
		s.post(t, http.StatusOK, docAccepts, events, ev("alice", "s1", "message", "as alice"), bearerHeader(alice))
		s.frame(t, bob, "event")

		s.post(t, http.StatusBadRequest, docRejects, events, `[]`, admin)
		s.post(t, http.StatusBadRequest, docRejects, events, `{"sender_id":`, admin)
		s.post(t, http.StatusBadRequest, docEither, events,
			`{"sender_id":"a","sender_id":"b","sender_type":"ai","event_type":"m","session_id":"s1"}`, admin)
		s.post(t, http.StatusBadRequest, docRejects, events, strings.Repeat(`{"a":`, 40)+"1"+strings.Repeat("}", 40), admin)

		s.post(t, http.StatusUnauthorized, docRejects, events, ev("alice", "s1"), nil)
		s.post(t, http.StatusUnauthorized, docAccepts, events, ev("alice", "s1"), bearerHeader("wrong-key"))
		s.post(t, http.StatusUnauthorized, docAccepts, events, ev("alice", "s1"), bearerHeader(mint(t, "alice", nil, -time.Hour)))
		s.post(t, http.StatusForbidden, docAccepts, events, ev("mallory", "s1"), bearerHeader(alice))
		s.post(t, http.StatusForbidden, docAccepts, events, ev("alice", "s2"), bearerHeader(alice))
		s.post(t, http.StatusNotFound, docAccepts, events, ev("alice", "nobody-here"), admin)
		s.post(t, http.StatusNotFound, docAccepts, events, ev("alice", "s1", "recipient_id", "ghost"), admin)
		s.post(t, http.StatusRequestEntityTooLarge, docAccepts, events, ev("alice", "s1", "message", strings.Repeat("m", 9000)), admin)
		s.post(t, http.StatusUnsupportedMediaType, docRejects, events, ev("alice", "s1"), withHeader(admin, "Content-Type", "text/plain"))

		for name, tc := range map[string]struct {
			body    any
			verdict oaVerdict
			field   string
		}{
			"no sender_type":              {ev("alice", "s1", "sender_type", nil), docRejects, "sender_type"},
			"sender_type out of enum":     {ev("alice", "s1", "sender_type", "robot"), docRejects, "sender_type"},
			"empty event_type":            {ev("alice", "s1", "event_type", ""), docRejects, "event_type"},
			"no session nor recipient":    {ev("alice", "", "session_id", nil), docRejects, "session_id"},
			"session_id too long":         {ev("alice", strings.Repeat("s", 257)), docRejects, "session_id"},
			"event_id too long":           {ev("alice", "s1", "event_id", strings.Repeat("e", 129)), docRejects, "event_id"},
			"control character":           {ev("al\u0001ice", "s1"), docRejects, "sender_id"},
			"sender_id of the wrong type": {ev("alice", "s1", "sender_id", 5), docRejects, "sender_id"},
			"51 metadata keys":            {`{"sender_id":"alice","sender_type":"ai","event_type":"m","session_id":"s1","metadata":` + apiMeta(51) + `}`, docRejects, "metadata"},
			"metadata key too long":       {ev("alice", "s1", "metadata", map[string]any{strings.Repeat("k", 129): 1}), docRejects, "metadata"},
			"message over the limit":      {ev("alice", "s1", "message", strings.Repeat("m", 1025)), docAccepts, "message"},
			"not an http URL":             {ev("alice", "s1", "sender_gateway_url", "ftp://gw.example.com"), docRejects, "sender_gateway_url"},
			"URL with a query":            {ev("alice", "s1", "sender_gateway_url", "https://gw.example.com/?a=b"), docRejects, "sender_gateway_url"},
			"gateway not allowed":         {ev("alice", "s1", "sender_gateway_url", "https://gw.example.com"), docAccepts, "sender_gateway_url"},
			"invalid UTF-8":               {"{\"sender_id\":\"a\xffb\",\"sender_type\":\"ai\",\"event_type\":\"m\",\"session_id\":\"s1\"}", docEither, "sender_id"},
		} {
			t.Run(name, func(t *testing.T) {
				r := s.post(t, http.StatusUnprocessableEntity, tc.verdict, events, tc.body, admin)
				assert.Equal(t, tc.field, r.Body["field"], "%s", r.Raw)
			})
		}

		// carol replies through her gateway, which is down: she becomes an
		// external participant of s1, and the next event to s1 reaches bob
		// but not her: 502 naming her.
		s.post(t, http.StatusOK, docAccepts, events, ev("carol", "s1", "sender_gateway_url", dead, "message", "from outside"), admin)
		s.frame(t, bob, "event")
		r = s.post(t, http.StatusBadGateway, docAccepts, events, ev("alice", "s1", "message", "to carol too"), admin)
		assert.Equal(t, []any{"carol"}, r.Body["failed"])
		assert.NotEmpty(t, r.Body["event_id"])
		s.frame(t, bob, "event")
	})

	t.Run("deliveries", func(t *testing.T) {
		bob.ReportTo(t)
		s.post(t, http.StatusOK, docAccepts, deliveries, map[string]any{"recipient_id": "bob", "session_id": "s1",
			"event": ev("alice", "s1", "message", "delivered")}, admin)
		s.frame(t, bob, "event")
		r := s.post(t, http.StatusOK, docAccepts, deliveries, map[string]any{"recipient_ids": []string{"bob", "ghost", "bob"},
			"event": ev("alice", "s1")}, withHeader(admin, "Switchyard-Hops", "1"))
		assert.Equal(t, []any{"ghost"}, r.Body["not_found"])
		s.frame(t, bob, "event")

		s.post(t, http.StatusBadRequest, docRejects, deliveries, `{`, admin)
		s.post(t, http.StatusUnauthorized, docRejects, deliveries, map[string]any{"recipient_id": "bob", "event": ev("alice", "s1")}, nil)
		s.post(t, http.StatusForbidden, docAccepts, deliveries, map[string]any{"recipient_id": "bob", "event": ev("alice", "s1")}, bearerHeader(alice))
		s.post(t, http.StatusNotFound, docAccepts, deliveries, map[string]any{"recipient_id": "ghost", "event": ev("alice", "s1")}, admin)
		s.post(t, http.StatusRequestEntityTooLarge, docAccepts, deliveries, map[string]any{"recipient_id": "bob",
			"event": ev("alice", "s1", "message", strings.Repeat("m", 9000))}, admin)
		s.post(t, http.StatusUnsupportedMediaType, docRejects, deliveries, `{}`, withHeader(admin, "Content-Type", "application/xml"))
		s.post(t, http.StatusUnprocessableEntity, docRejects, deliveries, map[string]any{"recipient_id": "bob"}, admin)
		s.post(t, http.StatusUnprocessableEntity, docRejects, deliveries, map[string]any{"event": ev("alice", "s1")}, admin)
		s.post(t, http.StatusUnprocessableEntity, docRejects, deliveries, map[string]any{"recipient_id": "bob",
			"event": ev("alice", "s1", "sender_type", "robot")}, admin)
		s.post(t, http.StatusUnprocessableEntity, docRejects, deliveries, map[string]any{"recipient_id": "bob",
			"recipient_gateway_url": "gw.example.com", "event": ev("alice", "s1")}, admin)
	})

	t.Run("sessions", func(t *testing.T) {
		bob.ReportTo(t)
		put := func(want int, verdict oaVerdict, session, participant string, body []byte, header map[string]string) apiResponse {
			t.Helper()
			return s.call(t, want, verdict, http.MethodPut, sessions+url.PathEscape(session)+"/participants/"+url.PathEscape(participant), body, header)
		}
		del := func(want int, verdict oaVerdict, session, participant string, header map[string]string) apiResponse {
			t.Helper()
			return s.call(t, want, verdict, http.MethodDelete, sessions+url.PathEscape(session)+"/participants/"+url.PathEscape(participant), nil, header)
		}
		get := func(want int, verdict oaVerdict, session string, header map[string]string) apiResponse {
			t.Helper()
			return s.call(t, want, verdict, http.MethodGet, sessions+url.PathEscape(session), nil, header)
		}

		put(http.StatusOK, docAccepts, "s2", "pp", nil, admin)
		put(http.StatusOK, docAccepts, "s2", "ph", []byte(`{"participant_type":"human"}`), admin)
		put(http.StatusOK, docAccepts, "s 2/x", "p%q", []byte(`{}`), admin)
		put(http.StatusOK, docAccepts, "ext", "outsider", []byte(`{"participant_type":"ai","gateway_url":"`+dead+`"}`), admin)
		// carol and outsider fill the node's two external participants.
		put(http.StatusServiceUnavailable, docAccepts, "ext", "outsider2", []byte(`{"gateway_url":"`+dead+`"}`), admin)
		s.post(t, http.StatusServiceUnavailable, docAccepts, events, ev("dave", "s1", "sender_gateway_url", dead), admin)
		put(http.StatusBadRequest, docRejects, "s2", "pp", []byte(`[1]`), admin)
		put(http.StatusUnauthorized, docRejects, "s2", "pp", nil, nil)
		put(http.StatusForbidden, docAccepts, "s1", "bob", nil, bearerHeader(alice))
		put(http.StatusForbidden, docAccepts, "s1", "alice", []byte(`{"gateway_url":"`+dead+`"}`), bearerHeader(alice))
		put(http.StatusRequestEntityTooLarge, docAccepts, "s2", "pp", []byte(`{"pad":"`+strings.Repeat("x", 9000)+`"}`), admin)
		put(http.StatusUnsupportedMediaType, docRejects, "s2", "pp", []byte(`{}`), withHeader(admin, "Content-Type", "text/plain"))
		put(http.StatusUnprocessableEntity, docRejects, "s2", "pp", []byte(`{"participant_type":"robot"}`), admin)
		put(http.StatusUnprocessableEntity, docAccepts, "s2", "pp", []byte(`{"gateway_url":"https://gw.example.com"}`), admin)
		put(http.StatusUnprocessableEntity, docRejects, strings.Repeat("s", 257), "pp", nil, admin)

		r := get(http.StatusOK, docAccepts, "s1", admin)
		var nodes, gateways int
		for _, p := range r.Body["participants"].([]any) {
			p := p.(map[string]any)
			if p["node"] != nil {
				nodes++
			}
			if p["gateway_url"] != nil {
				gateways++
			}
		}
		assert.Equal(t, 2, nodes, "bob and alice: %s", r.Raw)
		assert.Equal(t, 1, gateways, "carol: %s", r.Raw)
		get(http.StatusOK, docAccepts, "s1", bearerHeader(alice))
		get(http.StatusNotFound, docAccepts, "nobody-here", admin)
		get(http.StatusForbidden, docAccepts, "s2", bearerHeader(alice))
		get(http.StatusUnauthorized, docRejects, "s1", nil)
		get(http.StatusUnprocessableEntity, docRejects, strings.Repeat("s", 257), admin)

		del(http.StatusOK, docAccepts, "s2", "pp", admin)
		del(http.StatusOK, docAccepts, "ext", "outsider", withHeader(admin, "Switchyard-Hops", "0"))
		del(http.StatusNotFound, docAccepts, "s2", "pp", admin)
		del(http.StatusForbidden, docAccepts, "s1", "bob", bearerHeader(alice))
		del(http.StatusUnauthorized, docAccepts, "s1", "bob", bearerHeader("wrong-key"))
		del(http.StatusUnprocessableEntity, docRejects, "s1", strings.Repeat("p", 257), admin)

		s.call(t, http.StatusOK, docAccepts, http.MethodGet, n.URL()+"/v1/gateway/members", nil, admin)
		s.call(t, http.StatusOK, docAccepts, http.MethodGet, n.URL()+"/v1/gateway/members", nil, bearerHeader(alice))
		s.call(t, http.StatusUnauthorized, docRejects, http.MethodGet, n.URL()+"/v1/gateway/members", nil, nil)

		local := n.URL() + "/v1/gateway/participants"
		s.call(t, http.StatusOK, docAccepts, http.MethodGet, local, nil, admin)
		s.call(t, http.StatusOK, docAccepts, http.MethodGet, local+"?limit=1&after=a", nil, admin)
		s.call(t, http.StatusForbidden, docAccepts, http.MethodGet, local, nil, bearerHeader(alice))
		s.call(t, http.StatusUnauthorized, docRejects, http.MethodGet, local, nil, nil)
		s.call(t, http.StatusUnprocessableEntity, docRejects, http.MethodGet, local+"?limit=0", nil, admin)
	})

	t.Run("gap", func(t *testing.T) {
		// gp waits offline in g; three events into a mailbox of two leave a gap.
		s.call(t, http.StatusOK, docAccepts, http.MethodPut, sessions+"g/participants/gp", nil, admin)
		for i := range 3 {
			r := s.post(t, http.StatusOK, docAccepts, events, ev("alice", "g", "message", fmt.Sprint(i)), admin)
			assert.Equal(t, float64(1), r.Body["queued"])
		}
		c := s.attach(t, n, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"gp"}, "resume_from": {"0"}, "batch": {"1"}},
			http.Header{"Authorization": {"Bearer " + adminKey}})
		w := s.frame(t, c, "welcome")
		assert.Equal(t, true, w["resumed"])
		g := s.frame(t, c, "gap")
		assert.Equal(t, float64(1), g["to_seq"])
		s.frame(t, c, "event")
		s.frame(t, c, "event")
	})

	t.Run("operations endpoints", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
			s.call(t, http.StatusOK, docAccepts, http.MethodGet, n.URL()+p, nil, nil)
		}
		s.call(t, http.StatusOK, docAccepts, http.MethodGet, n.URL()+"/metrics", nil, map[string]string{"Accept": "application/openmetrics-text; version=1.0.0"})
		s.post(t, http.StatusNotFound, docAccepts, n.URL()+directoryPath, `u{"n":"x","ep":1,"ch":[]}`, admin)
	})

	t.Run("limits", func(t *testing.T) {
		one := startNode(t, Config{APIKeys: []string{"k"}, MaxConnections: 1})
		h := http.Header{"Authorization": {"Bearer k"}}
		s.attach(t, one, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"first"}}, h)
		s.attach(t, one, http.StatusServiceUnavailable, docAccepts, url.Values{"participant_id": {"second"}}, h)

		capped := startNode(t, Config{APIKeys: []string{"k"}, MaxConnectionsPerParticipant: 1, MaxConnectionsPerCredential: 2})
		s.attach(t, capped, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"first"}}, h)
		s.attach(t, capped, http.StatusTooManyRequests, docAccepts, url.Values{"participant_id": {"first"}}, h)
		s.attach(t, capped, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"second"}}, h)
		s.attach(t, capped, http.StatusTooManyRequests, docAccepts, url.Values{"participant_id": {"third"}}, h)

		limited := startNode(t, Config{APIKeys: []string{"k"}, RateLimit: 0.001, RateBurst: 1})
		k := bearerHeader("k")
		s.post(t, http.StatusNotFound, docAccepts, limited.URL()+"/v1/gateway/events", ev("a", "s"), k) // the one token
		r := s.post(t, http.StatusTooManyRequests, docAccepts, limited.URL()+"/v1/gateway/events", ev("a", "s"), k)
		assert.NotEmpty(t, r.Header.Get("Retry-After"))
		s.call(t, http.StatusTooManyRequests, docAccepts, http.MethodPut, limited.URL()+"/v1/gateway/sessions/s/participants/p", nil, k)
		s.call(t, http.StatusTooManyRequests, docAccepts, http.MethodDelete, limited.URL()+"/v1/gateway/sessions/s/participants/p", nil, k)
		s.attach(t, limited, http.StatusTooManyRequests, docAccepts, url.Values{"participant_id": {"p"}}, h)
		s.call(t, http.StatusOK, docAccepts, http.MethodGet, limited.URL()+"/v1/gateway/members", nil, k) // not limited

		// WebSocket frames draw from the same bucket: a 429 result, or an
		// error frame without an id.
		framed := startNode(t, Config{APIKeys: []string{"k"}, RateLimit: 0.001, RateBurst: 1})
		c := s.attach(t, framed, http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"p"}}, h) // the one token
		s.frame(t, c, "welcome")
		c.Send(map[string]any{"type": "join", "id": "j", "session_id": "s"})
		res := s.frame(t, c, "result")
		assert.Equal(t, float64(http.StatusTooManyRequests), res["status"])
		c.Send(map[string]any{"type": "leave", "session_id": "s"})
		assert.Equal(t, "rate_limited", s.frame(t, c, "error")["code"])

		// A draining node: unready, and refusing attaches and takeovers.
		// (Shutdown would stop the listener too early to see them; the
		// flag is what Shutdown sets first.)
		draining := startNode(t, Config{APIKeys: []string{"k"}})
		draining.draining.Store(true)
		s.call(t, http.StatusServiceUnavailable, docAccepts, http.MethodGet, draining.URL()+"/readyz", nil, nil)
		s.attach(t, draining, http.StatusServiceUnavailable, docAccepts, url.Values{"participant_id": {"p"}}, h)
		s.post(t, http.StatusServiceUnavailable, docAccepts, draining.URL()+takeoverPath, `{"participant_id":"p","from":"elsewhere"}`, k)
	})

	t.Run("cluster", func(t *testing.T) {
		nodes := startCluster(t, 2, Config{APIKeys: []string{"ck"}, TokenSecret: testSecret})
		ck := bearerHeader("ck")
		tok := bearerHeader(mint(t, "p", nil, time.Hour))
		r := s.call(t, http.StatusOK, docAccepts, http.MethodGet, nodes[0].URL()+"/v1/gateway/members", nil, ck)
		assert.Len(t, r.Body["members"], 2)

		dir := nodes[0].URL() + directoryPath
		s.post(t, http.StatusConflict, docAccepts, dir, `u{"n":"stranger","ep":1,"r":[]}`, ck)
		s.post(t, http.StatusBadRequest, docAccepts, dir, `{"n":"stranger"}`, ck)
		s.post(t, http.StatusForbidden, docAccepts, dir, `u{"n":"stranger","ep":1,"r":[]}`, tok)
		s.post(t, http.StatusUnsupportedMediaType, docRejects, dir, `u{}`, withHeader(ck, "Content-Type", "text/plain"))

		lookup := nodes[0].URL() + lookupPath
		s.post(t, http.StatusOK, docAccepts, lookup, `{"keys":["s:nobody-here"],"sessions":["nobody"]}`, ck)
		s.post(t, http.StatusBadRequest, docRejects, lookup, `["s:x"]`, ck)
		s.post(t, http.StatusForbidden, docAccepts, lookup, `{"keys":["s:x"]}`, tok)
		s.post(t, http.StatusUnsupportedMediaType, docRejects, lookup, `{}`, withHeader(ck, "Content-Type", "text/plain"))

		// att attached on node 2, and a submit on node 1 reaching it there.
		att := s.attach(t, nodes[1], http.StatusSwitchingProtocols, docAccepts, url.Values{"participant_id": {"att"}, "session_id": {"cs"}},
			http.Header{"Authorization": {"Bearer ck"}})
		s.frame(t, att, "welcome")
		s.post(t, http.StatusOK, docAccepts, nodes[0].URL()+"/v1/gateway/events", ev("x", "cs", "message", "across"), ck)
		f := s.frame(t, att, "event")
		assert.Equal(t, "across", f["event"].(map[string]any)["message"])

		release := nodes[1].URL() + releasePath
		// rel waits offline on node 2 with an event in its mailbox.
		s.call(t, http.StatusOK, docAccepts, http.MethodPut, nodes[1].URL()+"/v1/gateway/sessions/rs/participants/rel", nil, ck)
		s.post(t, http.StatusOK, docAccepts, nodes[1].URL()+"/v1/gateway/events", ev("x", "rs", "message", "waiting"), ck)
		r = s.post(t, http.StatusOK, docAccepts, release, map[string]any{"participant_id": "rel", "from": "node-1"}, ck)
		assert.Len(t, r.Body["events"], 1)
		// Asked again (an answer lost on its way): the state it holds, until confirmed.
		r = s.post(t, http.StatusOK, docAccepts, release, map[string]any{"participant_id": "rel", "from": "node-1"}, ck)
		assert.Len(t, r.Body["events"], 1)
		s.post(t, http.StatusOK, docAccepts, release, map[string]any{"participant_id": "rel", "from": "node-1", "confirm": true}, ck)
		s.post(t, http.StatusNotFound, docAccepts, release, map[string]any{"participant_id": "rel", "from": "node-1"}, ck)
		s.post(t, http.StatusConflict, docAccepts, release, map[string]any{"participant_id": "att", "from": "node-1"}, ck)
		s.post(t, http.StatusUnprocessableEntity, docRejects, release, `{"from":"node-1"}`, ck)
		s.post(t, http.StatusBadRequest, docRejects, release, `"rel"`, ck)
		s.post(t, http.StatusForbidden, docAccepts, release, map[string]any{"participant_id": "rel"}, tok)
		s.post(t, http.StatusUnauthorized, docRejects, release, map[string]any{"participant_id": "rel"}, nil)
		s.post(t, http.StatusRequestEntityTooLarge, docAccepts, release, map[string]any{"participant_id": "rel",
			"pad": strings.Repeat("x", 70<<10)}, ck)

		// rb is released to node 1, which gives it back with the events it got.
		restore := nodes[1].URL() + restorePath
		s.call(t, http.StatusOK, docAccepts, http.MethodPut, nodes[1].URL()+"/v1/gateway/sessions/bs/participants/rb", nil, ck)
		s.post(t, http.StatusOK, docAccepts, nodes[1].URL()+"/v1/gateway/events", ev("x", "bs", "message", "waiting"), ck)
		r = s.post(t, http.StatusOK, docAccepts, release, map[string]any{"participant_id": "rb", "from": "node-1"}, ck)
		back := map[string]any{"participant_id": "rb", "from": "node-1", "events": r.Body["events"]}
		s.post(t, http.StatusOK, docAccepts, restore, back, ck)
		require.NotNil(t, nodes[1].hub.Lookup("rb"), "rb is back on node 2")
		s.post(t, http.StatusNotFound, docAccepts, restore, map[string]any{"participant_id": "nobody", "from": "node-1"}, ck)
		s.post(t, http.StatusUnprocessableEntity, docRejects, restore, map[string]any{"participant_id": "rb"}, ck)
		s.post(t, http.StatusForbidden, docAccepts, restore, back, tok)

		// tk waits offline on node 2; node 1 takes it over.
		s.call(t, http.StatusOK, docAccepts, http.MethodPut, nodes[1].URL()+"/v1/gateway/sessions/ts/participants/tk", nil, ck)
		takeover := nodes[0].URL() + takeoverPath
		s.post(t, http.StatusOK, docAccepts, takeover, map[string]any{"participant_id": "tk", "from": "node-2"}, ck)
		s.post(t, http.StatusUnprocessableEntity, docRejects, takeover, map[string]any{"participant_id": "tk"}, ck)
		s.post(t, http.StatusForbidden, docAccepts, takeover, map[string]any{"participant_id": "tk", "from": "node-2"}, tok)
		s.post(t, http.StatusUnsupportedMediaType, docRejects, takeover, `{}`, withHeader(ck, "Content-Type", "text/plain"))
	})

	// Every documented operation was exercised above (unless -run picked
	// some subtests only).
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "/") {
		t.Log("a subtest filter is set: not checking that every operation was exercised")
		return
	}
	var missing []string
	for path, item := range s.doc.Paths.Map() {
		for method := range item.Operations() {
			if !s.seen[method+" "+path] {
				missing = append(missing, method+" "+path)
			}
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "documented operations the conformance test never called")
}
