package sidecar

import (
	"testing"
	"time"

	"github.com/switchyard-gw/switchyard/internal/ident"
)

// FuzzTokenParsing: no string makes token verification panic, and what it
// accepts has a valid subject.
func FuzzTokenParsing(f *testing.F) {
	secret := []byte("fuzz-secret-fuzz-secret-fuzz-sec")
	good, _ := MintToken(secret, "alice", []string{"s1"}, time.Hour)
	f.Add(good)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("")
	v := &tokenVerifier{secret: secret, leeway: time.Second}
	f.Fuzz(func(t *testing.T, raw string) {
		cred, err := v.verify(raw)
		if err != nil {
			return
		}
		if cred.Kind != credToken || ident.Problem(cred.Subject, ident.MaxParticipantID) != "" {
			t.Fatalf("accepted a token with subject %q", cred.Subject)
		}
	})
}
