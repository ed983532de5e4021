package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// keyring holds the accepted API keys as SHA-256 digests, so comparing a
// presented key costs the same whatever its length or which key it matches.
type keyring struct {
	digests [][sha256.Size]byte
}

func newKeyring(keys []string) *keyring {
	k := &keyring{}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	return k
}

// enabled reports whether any key is configured (authentication is on).
func (k *keyring) enabled() bool { return len(k.digests) > 0 }

// valid reports whether key is one of the keys, in constant time.
func (k *keyring) valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0
	for i := range k.digests {
		ok |= subtle.ConstantTimeCompare(d[:], k.digests[i][:])
	}
	return ok == 1
}

// Credential is what authenticated a request.
type Credential struct {
	Kind string // "api_key", or "none" when authentication is off
}

type credentialKey struct{}

func credentialFrom(ctx context.Context) Credential {
	c, _ := ctx.Value(credentialKey{}).(Credential)
	return c
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate requires a valid credential on every request it wraps. The
// WebSocket attach may carry it as access_token in the query, for browsers.
func (k *keyring) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !k.enabled() {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), credentialKey{}, Credential{Kind: "none"})))
			return
		}
		token := bearer(r)
		if token == "" && r.URL.Path == wsPath {
			token = r.URL.Query().Get("access_token")
		}
		switch {
		case token == "":
			writeError(w, newError(http.StatusUnauthorized, "unauthorized", "",
				"send a credential: Authorization: Bearer <api key>"))
		case !k.valid(token):
			writeError(w, newError(http.StatusUnauthorized, "unauthorized", "", "the credential is not valid"))
		default:
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), credentialKey{}, Credential{Kind: "api_key"})))
		}
	})
}
