package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/wire"
)

// keyring holds the accepted API keys as SHA-256 digests, so comparing a
// presented key costs the same whatever its length or which key it matches,
// and each key's id (apiKeyID), computed once rather than per request.
type keyring struct {
	digests [][sha256.Size]byte
	ids     []string
}

func newKeyring(keys []string) *keyring {
	k := &keyring{}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
		k.ids = append(k.ids, apiKeyID(key))
	}
	return k
}

// match finds key among the keys, comparing it with every one (constant
// time whichever matches), and returns its id.
func (k *keyring) match(key string) (id string, ok bool) {
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return k.ids[found], true
}

// Credential kinds.
const (
	credNone   = "none"    // authentication is off (loopback, no keys)
	credAPIKey = "api_key" // full rights
	credToken  = "token"   // a participant token: rights of its subject only
	// credCluster is the cluster key: the nodes' own credential, full
	// rights plus the node-to-node endpoints (/v1/gateway/cluster/*).
	credCluster = "cluster"
)

// Credential is what authenticated a request.
type Credential struct {
	Kind string
	// For a participant token: the participant it speaks for, and the
	// sessions it may use (nil: any).
	Subject  string
	Sessions []string
	// KeyID names an API key without holding it ("key:" and a digest
	// prefix): what the rate limit and per-credential quotas count against.
	KeyID string
}

// rateKey names the credential for the rate limiter and the connection
// caps without holding the secret itself: the key's digest identify took
// once (KeyID), a token's subject, or the client's address.
func (c Credential) rateKey(r *http.Request) string {
	switch c.Kind {
	case credToken:
		return "token:" + c.Subject
	case credAPIKey, credCluster:
		return c.KeyID
	}
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return "addr:" + host
}

// apiKeyID names an API key without revealing it: "key:" and a short
// digest.
func apiKeyID(key string) string {
	d := sha256.Sum256([]byte(key))
	return "key:" + hex.EncodeToString(d[:8])
}

var errForbidden = func(field, detail string) *wire.Error {
	return wire.NewError(http.StatusForbidden, "forbidden", field, detail)
}

// actAs checks that c may speak for participant (field names where it came
// from: sender_id, participant_id).
func (c Credential) actAs(participant, field string) *wire.Error {
	if c.Kind == credToken && c.Subject != participant {
		return errForbidden(field, "a participant token may only act as its own participant ("+c.Subject+")")
	}
	return nil
}

// useSession checks that c may use session.
func (c Credential) useSession(session string) *wire.Error {
	if c.Kind == credToken && c.Sessions != nil && !slices.Contains(c.Sessions, session) {
		return errForbidden("session_id", "this participant token does not allow the session "+wire.Quote(session))
	}
	return nil
}

// fullRights checks that c is an API key (or authentication is off): the
// endpoints between nodes and those that act for others need one.
func (c Credential) fullRights() *wire.Error {
	if c.Kind == credToken {
		return errForbidden("", "this endpoint needs an API key, not a participant token")
	}
	return nil
}

// clusterRights checks that c is the cluster key (or authentication is
// off): the node-to-node endpoints take nothing else, so no app key or
// token can speak for a node.
func (c Credential) clusterRights() *wire.Error {
	if c.Kind != credCluster && c.Kind != credNone {
		return errForbidden("", "the /v1/gateway/cluster/ endpoints are between nodes: they take the cluster key "+
			"(--cluster-key), not an API key or a participant token")
	}
	return nil
}

// credentialFrom is the credential authenticate found for the request.
func credentialFrom(ctx context.Context) Credential {
	if info := requestInfoFrom(ctx); info != nil {
		return info.cred
	}
	return Credential{Kind: credNone}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// tokenVerifier checks participant tokens: HS256 JWTs with sub (the
// participant), exp (required), optional nbf and sessions.
type tokenVerifier struct {
	secret []byte
	leeway time.Duration
}

// tokenClaims are a participant token's claims. Sessions is omitted when
// nil (any session) but kept when empty: "sessions": [] allows none.
type tokenClaims struct {
	Sessions []string `json:"sessions,omitzero"`
	jwt.RegisteredClaims
}

// rawClaims are the claims whose JSON type the verifier checks itself:
// golang-jwt reads a NumericDate from a string too ("exp": "1700000000").
type rawClaims struct {
	Exp      json.RawMessage `json:"exp"`
	Nbf      json.RawMessage `json:"nbf"`
	Iat      json.RawMessage `json:"iat"`
	Sessions json.RawMessage `json:"sessions"`
}

// claimTypesProblem checks the claims segment of a verified token: exp, nbf
// and iat must be JSON numbers, and sessions, when present, an array (null
// is refused: an issuer that serialised an empty list as null must not
// grant every session).
func claimTypesProblem(raw string) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	var c rawClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return err
	}
	for name, v := range map[string]json.RawMessage{"exp": c.Exp, "nbf": c.Nbf, "iat": c.Iat} {
		if v != nil && (len(v) == 0 || !strings.ContainsRune("-0123456789", rune(v[0]))) {
			return errors.New("the token's " + name + " is not a number")
		}
	}
	if c.Sessions != nil && (len(c.Sessions) == 0 || c.Sessions[0] != '[') {
		return errors.New("the token's sessions is not an array")
	}
	return nil
}

var errTokenExpired = errors.New("the token has expired or is not valid yet")

func (v *tokenVerifier) verify(raw string) (Credential, error) {
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return v.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(v.leeway))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return Credential{}, errTokenExpired
	case err != nil:
		return Credential{}, err
	case claimTypesProblem(raw) != nil:
		return Credential{}, claimTypesProblem(raw)
	case ident.Problem(claims.Subject, ident.MaxParticipantID) != "":
		return Credential{}, errors.New("the token's sub is not a valid participant id")
	}
	return Credential{Kind: credToken, Subject: claims.Subject, Sessions: claims.Sessions}, nil
}

// authenticator decides who a request is.
type authenticator struct {
	keys *keyring
	// cluster holds the cluster keys accepted from peers (the node's own,
	// and while the gossip key rotates, those derived from the other
	// gossip keys). Empty: none.
	cluster *keyring
	tokens  *tokenVerifier // nil: no token secret
	limit   *rateLimiter   // nil: no rate limit
}

func (a *authenticator) enabled() bool { return len(a.keys.digests) > 0 || a.tokens != nil }

// presented is the credential a request carries. The WebSocket attach may
// carry it as access_token in the query, for browsers; it is never logged.
func presented(r *http.Request) string {
	if b := bearer(r); b != "" || r.URL.Path != wsPath {
		return b
	}
	return r.URL.Query().Get("access_token")
}

// authenticate requires a valid credential on every request it wraps (when
// authentication is on) and puts it in the request's context.
func (a *authenticator) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred := Credential{Kind: credNone}
		if a.enabled() {
			var err *wire.Error
			if cred, err = a.identify(presented(r)); err != nil {
				wire.WriteError(w, err)
				return
			}
		}
		info := requestInfoFrom(r.Context())
		if info == nil { // not behind withRequestID
			info = &requestInfo{}
			r = r.WithContext(wire.WithRequest(r.Context(), info))
		}
		info.cred = cred
		next.ServeHTTP(w, r)
	})
}

// rateLimited applies the per-credential rate limit (429 with Retry-After)
// to what clients do: submits, attaches, session changes. Traffic between
// nodes (deliveries, directory, hand-off) is not limited: a busy cluster
// must not throttle itself.
func (a *authenticator) rateLimited(next http.Handler) http.Handler {
	if a.limit == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := credentialFrom(r.Context()).rateKey(r)
		if wait, ok := a.limit.allow(key); !ok {
			wire.WriteError(w, errRateLimited(wait, "too many requests for this credential; retry after the time in Retry-After"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *authenticator) identify(presented string) (Credential, *wire.Error) {
	if presented == "" {
		return Credential{}, wire.NewError(http.StatusUnauthorized, "unauthorized", "",
			"send a credential: Authorization: Bearer <api key or participant token>")
	}
	// The cluster key first: the fallback cluster key is also an API key.
	// KeyID for both: with the fallback, an app's first API key is the
	// cluster credential, and its quotas count against that key.
	if a.cluster != nil {
		if id, ok := a.cluster.match(presented); ok {
			return Credential{Kind: credCluster, KeyID: id}, nil
		}
	}
	if id, ok := a.keys.match(presented); ok {
		return Credential{Kind: credAPIKey, KeyID: id}, nil
	}
	if a.tokens != nil && strings.Count(presented, ".") == 2 {
		cred, err := a.tokens.verify(presented)
		if errors.Is(err, errTokenExpired) {
			return Credential{}, wire.NewError(http.StatusUnauthorized, "token_expired", "", "the participant token has expired or is not valid yet")
		}
		if err != nil {
			return Credential{}, wire.NewError(http.StatusUnauthorized, "unauthorized", "", "the participant token is not valid")
		}
		return cred, nil
	}
	return Credential{}, wire.NewError(http.StatusUnauthorized, "unauthorized", "", "the credential is not valid")
}

// MintToken makes a participant token (for tests and `switchyard token`).
func MintToken(secret []byte, participant string, sessions []string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := tokenClaims{Sessions: sessions, RegisteredClaims: jwt.RegisteredClaims{
		Subject: participant, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// externalOwner names the credential external participants it registers
// count against: an API key by a digest prefix (never the key), a token by
// its subject; "" when authentication is off (only the node's cap applies).
func (c Credential) externalOwner() string {
	switch c.Kind {
	case credAPIKey, credCluster: // the cluster key may be the first API key (no gossip key)
		return c.KeyID
	case credToken:
		return "token:" + c.Subject
	}
	return ""
}
