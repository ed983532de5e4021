package sidecar

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testGossipKey is a valid AES-256 gossip key for tests.
var testGossipKey = []byte("0123456789abcdef0123456789abcdef")

// postSigned posts a raw directory message with a credential and, when sig
// is not empty, a signature header.
func postSigned(t *testing.T, u string, msg []byte, cred, sig string) apiResponse {
	t.Helper()
	h := map[string]string{}
	if cred != "" {
		h["Authorization"] = "Bearer " + cred
	}
	if sig != "" {
		h[signatureHeader] = sig
	}
	return do(t, http.MethodPost, u, msg, h)
}

// requireRoutes checks that bob, attached to node-2, is still reachable
// from node 1 (its directory entry at node 1 is intact and the peer hop
// works).
func requireRoutes(t *testing.T, n1 *Node, bob *client, cred, message string, seq uint64) {
	t.Helper()
	assert.Len(t, dirParticipant(n1, "bob"), 1, "node 1 still finds node-2's participant")
	r := postJSON(t, n1.URL()+apiEventsPath, event("x", "s9", message), bearerHeader(cred))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	_, inner := apiNextEvent(t, bob, seq)
	assert.Equal(t, message, inner["message"])
}

// TestClusterRoutesTakeOnlyTheClusterKey: with two API keys and a gossip
// key (the cluster key is derived from it), neither API key nor a
// participant token may call any /v1/gateway/cluster/ endpoint (403): a
// forged "node-2 is leaving" sent to node 1 changes nothing, and node 1
// still routes to node-2's participant, over the peer hop that carries the
// derived cluster key.
func TestClusterRoutesTakeOnlyTheClusterKey(t *testing.T) {
	nodes := cfCluster(t, 2, Config{APIKeys: []string{"app1", "app2"}, TokenSecret: testSecret}, nil, func(_ int, c *Config) {
		c.Gossip.Key = testGossipKey
	})
	n1, n2 := nodes[0], nodes[1]
	require.Equal(t, deriveClusterKey(testGossipKey), n1.cfg.ClusterKey, "the default cluster key is derived from the gossip key")
	bob, _ := attach(t, n2, "bob", sessionQuery("s9"), http.Header{"Authorization": {"Bearer app2"}})
	require.Eventually(t, func() bool { return len(dirParticipant(n1, "bob")) == 1 },
		10*time.Second, 10*time.Millisecond, "node 1 never learned of bob")
	requireRoutes(t, n1, bob, "app1", "before", 1)

	leaving := []byte(`l{"n":"node-2","ep":1}`)
	epoch := []byte(fmt.Sprintf(`r{"n":"node-2","ep":%d}`, int64(1)<<62))
	for _, cred := range []string{"app1", "app2", mint(t, "bob", nil, time.Hour)} {
		for _, path := range []string{"/v1/gateway/cluster/directory", "/v1/gateway/cluster/release",
			"/v1/gateway/cluster/takeover", "/v1/gateway/cluster/anything-new", "/v1/gateway/cluster"} {
			for _, msg := range [][]byte{leaving, epoch} {
				r := postSigned(t, n1.URL()+path, msg, cred, "")
				apiRequireError(t, r, http.StatusForbidden, "forbidden", "")
				assert.Contains(t, string(r.Raw), "cluster key", "the detail says what the endpoint takes")
			}
		}
	}
	// A delivery from an external gateway still takes an API key.
	r := postJSON(t, n2.URL()+apiDeliveriesPath, cfDelivery("bob", "s9", "from a gateway"), bearerHeader("app1"))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	_, inner := apiNextEvent(t, bob, 2)
	assert.Equal(t, "from a gateway", inner["message"])

	requireRoutes(t, n1, bob, "app2", "after", 3)
}

// TestClusterDirectoryPushIsBoundToItsNode: even the cluster key's holder
// cannot push a directory message naming another node than the one that
// signed it: unsigned, signed by a third node, or a forged higher epoch,
// each is 403 and changes nothing; node-2's own signed message is applied.
func TestClusterDirectoryPushIsBoundToItsNode(t *testing.T) {
	nodes := cfCluster(t, 3, Config{APIKeys: []string{"app"}, ClusterKey: "the-cluster-key"}, nil, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	bob, _ := attach(t, n2, "bob", sessionQuery("s9"), http.Header{"Authorization": {"Bearer app"}})
	require.Eventually(t, func() bool { return len(dirParticipant(n1, "bob")) == 1 },
		10*time.Second, 10*time.Millisecond, "node 1 never learned of bob")
	u := n1.URL() + directoryPath

	leaving := []byte(`l{"n":"node-2","ep":1}`)
	epoch := []byte(fmt.Sprintf(`r{"n":"node-2","ep":%d}`, int64(1)<<62))
	for _, msg := range [][]byte{leaving, epoch} {
		for name, sig := range map[string]string{
			"unsigned":            "",
			"signed by node-3":    n3.gossip.Sign(msg),
			"signed by node-1":    n1.gossip.Sign(msg),
			"not base64":          "%%%",
			"node-2's, for other": n2.gossip.Sign(append(bytes.Clone(msg), ' ')),
		} {
			r := postSigned(t, u, msg, "the-cluster-key", sig)
			apiRequireError(t, r, http.StatusForbidden, "forbidden", "")
			assert.Contains(t, string(r.Raw), "not signed by the node it names", "%s", name)
		}
	}
	// A message naming the receiver itself is never a peer's to send.
	self := []byte(`l{"n":"node-1","ep":1}`)
	apiRequireError(t, postSigned(t, u, self, "the-cluster-key", n2.gossip.Sign(self)), http.StatusForbidden, "forbidden", "")
	requireRoutes(t, n1, bob, "app", "still routed", 1)

	// node-2's own signature is accepted (the check is not a blanket
	// refusal): its new epoch replaces what node 1 knew of it.
	own := []byte(fmt.Sprintf(`u{"n":"node-2","ep":%d,"r":[{"p":"carol","t":"ai","o":true},{"p":"carol","s":"s9"}]}`, int64(1)<<62))
	r := postSigned(t, u, own, "the-cluster-key", n2.gossip.Sign(own))
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	held, err := n1.gossip.HandleLookup([]byte(`{"keys":["p:carol"]}`)) // what node 1 keeps, whether or not it owns the key
	require.NoError(t, err)
	assert.Contains(t, string(held), `"participant_id":"carol"`, "node-2's signed message was applied")
}

// TestClusterKeyRotation: while the cluster key rotates, nodes that send
// different keys still accept each other's: a derived key follows the
// gossip key (keys derived from every gossip key given are accepted), and
// an explicit --cluster-key may be repeated (the first is sent).
func TestClusterKeyRotation(t *testing.T) {
	newKey := []byte("fedcba9876543210fedcba9876543210")
	for name, tweak := range map[string]func(i int, c *Config){
		"derived from the gossip key": func(i int, c *Config) {
			c.Gossip.Key, c.Gossip.ExtraKeys = testGossipKey, [][]byte{newKey}
			if i == 1 {
				c.Gossip.Key, c.Gossip.ExtraKeys = newKey, [][]byte{testGossipKey}
			}
		},
		"explicit": func(i int, c *Config) {
			c.ClusterKey, c.ExtraClusterKeys = "ck-old", []string{"ck-new"}
			if i == 1 {
				c.ClusterKey, c.ExtraClusterKeys = "ck-new", []string{"ck-old"}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			nodes := cfCluster(t, 2, Config{APIKeys: []string{"app"}}, nil, tweak)
			n1, n2 := nodes[0], nodes[1]
			require.NotEqual(t, n1.cfg.ClusterKey, n2.cfg.ClusterKey)
			bob, _ := attach(t, n2, "bob", sessionQuery("s9"), http.Header{"Authorization": {"Bearer app"}})
			require.Eventually(t, func() bool { return len(dirParticipant(n1, "bob")) == 1 },
				10*time.Second, 10*time.Millisecond, "node 1 never learned of bob")
			requireRoutes(t, n1, bob, "app", "across the rotation", 1)
		})
	}
}

// TestClusterKeyMustNotBeAnAPIKey: an explicit cluster key that is also an
// API key, or an empty API key, is refused at start.
func TestClusterKeyMustNotBeAnAPIKey(t *testing.T) {
	for name, c := range map[string]Config{
		"cluster key is an API key":       {APIKeys: []string{"a", "b"}, ClusterKey: "b"},
		"extra cluster key is an API key": {APIKeys: []string{"a", "b"}, ClusterKey: "c", ExtraClusterKeys: []string{"a"}},
		"empty extra cluster key":         {APIKeys: []string{"a"}, ClusterKey: "c", ExtraClusterKeys: []string{""}},
		"empty API key":                   {APIKeys: []string{"a", ""}},
	} {
		c.Listen, c.Logger = "127.0.0.1:0", testLogger()
		n, err := New(c)
		if !assert.Error(t, err, name) {
			_ = n.Shutdown(t.Context())
		}
	}
}

// TestGatewayURLWithDotSegmentsIsRefused: a sender_gateway_url or
// gateway_url with a "." or ".." segment (encoded or not) or a backslash is
// 422 invalid_url naming the field, even under an allowed prefix; the
// external key is only ever sent to paths under the prefix.
func TestGatewayURLWithDotSegmentsIsRefused(t *testing.T) {
	fake := newCFGateway(t, nil)
	n := startNode(t, Config{APIKeys: []string{"app"}, ExternalKey: "ext-key", AllowGateways: []string{fake.URL() + "/hooks"}})
	app := bearerHeader("app")
	for _, suffix := range []string{"/hooks/../admin", "/hooks/%2e%2e/admin", "/hooks/%2E%2E/admin", "/hooks/.%2e/admin",
		"/hooks/./x", "/hooks/%252e%252e/admin", "/hooks/..;/admin", `/hooks\..\admin`, "/hooks/a%5C..%5Cadmin", "/hooks/.."} {
		u := fake.URL() + suffix
		r := apiPut(t, n, "s1", "far", []byte(`{"gateway_url":`+apiStr(u)+`}`), app)
		apiRequireError(t, r, http.StatusUnprocessableEntity, "invalid_url", "gateway_url")
		ev := event("remote", "s1", "hi")
		ev["sender_gateway_url"] = u
		r = postJSON(t, n.URL()+apiEventsPath, ev, app)
		apiRequireError(t, r, http.StatusUnprocessableEntity, "invalid_url", "sender_gateway_url")
	}
	// Under the prefix: followed, with the external key.
	r := apiPut(t, n, "s1", "far", []byte(`{"gateway_url":`+apiStr(fake.URL()+"/hooks/team")+`}`), app)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	r = postJSON(t, n.URL()+apiEventsPath, event("x", "s1", "out"), app)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	got := fake.requests()
	require.NotEmpty(t, got)
	for _, req := range got {
		assert.True(t, strings.HasPrefix(path.Clean(req.path), "/hooks/team/"), "a request went to %s", req.path)
		assert.Equal(t, "Bearer ext-key", req.header.Get("Authorization"))
	}
}

// signClaims signs arbitrary claims with the test token secret.
func signClaims(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	require.NoError(t, err)
	return tok
}

// TestTokenClaimsMustHaveTheirJSONTypes: exp, nbf and iat given as strings,
// and "sessions": null, make the token invalid (401); "sessions": [] (also
// as MintToken writes an empty list) allows no session.
func TestTokenClaimsMustHaveTheirJSONTypes(t *testing.T) {
	n := secureNode(t)
	exp := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	str := func(v int64) string { return strconv.FormatInt(v, 10) }
	for name, claims := range map[string]jwt.MapClaims{
		"exp as a string":   {"sub": "alice", "exp": str(exp)},
		"nbf as a string":   {"sub": "alice", "exp": exp, "nbf": str(past)},
		"iat as a string":   {"sub": "alice", "exp": exp, "iat": str(past)},
		"sessions null":     {"sub": "alice", "exp": exp, "sessions": nil},
		"sessions a string": {"sub": "alice", "exp": exp, "sessions": "s1"},
	} {
		t.Run(name, func(t *testing.T) {
			tok := signClaims(t, claims)
			r := postJSON(t, n.URL()+apiEventsPath, event("alice", "s1", "x"), bearerHeader(tok))
			apiRequireError(t, r, http.StatusUnauthorized, "unauthorized", "")
			r = do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, bearerHeader(tok))
			assert.Equal(t, http.StatusUnauthorized, r.Status)
		})
	}
	// The same claims as numbers and an array are valid.
	ok := signClaims(t, jwt.MapClaims{"sub": "alice", "exp": exp, "nbf": past, "iat": past, "sessions": []string{"s1"}})
	r := postJSON(t, n.URL()+apiEventsPath, event("alice", "s1", "x"), bearerHeader(ok))
	assert.Contains(t, []int{http.StatusOK, http.StatusNotFound}, r.Status, "%s", r.Raw)

	// An empty list allows no session, whether signed here or by MintToken.
	minted, err := MintToken(testSecret, "alice", []string{}, time.Hour)
	require.NoError(t, err)
	for _, tok := range []string{signClaims(t, jwt.MapClaims{"sub": "alice", "exp": exp, "sessions": []string{}}), minted} {
		r := postJSON(t, n.URL()+apiEventsPath, event("alice", "s1", "x"), bearerHeader(tok))
		apiRequireError(t, r, http.StatusForbidden, "forbidden", "session_id")
		r = do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, bearerHeader(tok))
		assert.Equal(t, http.StatusOK, r.Status, "the token itself is valid")
	}
}

// TestTokenSessionsScopeWhatItsBearerDoes: a token's sessions claim limits
// what its bearer does (join, submit, read a session), not what its
// participant receives: a membership an API key granted (PUT) is the
// platform's explicit grant, and the participant's one mailbox carries
// every session it is in, with one contiguous seq (SPEC section 4). This
// is the behaviour docs/SECURITY.md decides.
func TestTokenSessionsScopeWhatItsBearerDoes(t *testing.T) {
	n := secureNode(t)
	admin := bearerHeader("admin-key")
	r := apiPut(t, n, "s2", "alice", []byte(`{}`), admin)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
	tok := mint(t, "alice", []string{"s1"}, time.Hour)
	alice, _ := attach(t, n, "alice", url.Values{"session_id": {"s1"}, "access_token": {tok}}, nil)

	for i, s := range []string{"s1", "s2", "s1"} {
		r := postJSON(t, n.URL()+apiEventsPath, event("x", s, "in "+s), admin)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Raw)
		f, inner := apiNextEvent(t, alice, uint64(i+1))
		assert.Equal(t, "in "+s, inner["message"])
		assert.Equal(t, s, f["event"].(map[string]any)["session_id"])
	}
	// What the bearer does stays within s1.
	apiRequireError(t, postJSON(t, n.URL()+apiEventsPath, event("alice", "s2", "x"), bearerHeader(tok)),
		http.StatusForbidden, "forbidden", "session_id")
	apiRequireError(t, do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/s2", nil, bearerHeader(tok)),
		http.StatusForbidden, "forbidden", "session_id")
	apiRequireError(t, do(t, http.MethodDelete, n.URL()+"/v1/gateway/sessions/s2/participants/alice", nil, bearerHeader(tok)),
		http.StatusForbidden, "forbidden", "session_id")
}
