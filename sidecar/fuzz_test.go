package sidecar

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/switchyard-gw/switchyard/internal/ident"
)

// FuzzEventDecoding: no body makes the vetting, decoding or validation
// panic, and every event that passes re-encodes to JSON that passes again,
// unchanged.
func FuzzEventDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"sender_id":"agent-α","sender_type":"ai","event_type":"message","message":"hi","session_id":"s1"}`,
		`{"sender_id":"a","sender_type":"human","event_type":"m","recipient_id":"b","metadata":{"k":[1,{"x":null}]}}`,
		`{"sender_id":"a","sender_id":"b"}`,
		`{"sender_id":"\ud800"}`,
		`{"sender_id":"a\u0000b"}`,
		`[1,2]`, `"x"`, `{`, `{"a":1e999}`, `{"sender_gateway_url":"https://u@h/"}`,
	} {
		f.Add([]byte(seed))
	}
	lim := Limits{MaxMessageBytes: 1 << 10, MaxMetadataKeys: 50}
	f.Fuzz(func(t *testing.T, data []byte) {
		var w wireEvent
		if err := decodeJSON(data, &w); err != nil {
			if err.Status != 400 && err.Status != 422 {
				t.Fatalf("decode answered %d", err.Status)
			}
			return
		}
		ev, verr := w.validate("", lim)
		if verr != nil {
			if verr.Status != 422 || verr.Field == "" {
				t.Fatalf("a validation error must be a 422 naming a field: %+v", verr)
			}
			return
		}
		for _, id := range []string{ev.SenderID, ev.SessionID, ev.RecipientID, ev.EventID} {
			if id != "" && ident.Problem(id, ident.MaxParticipantID) != "" {
				t.Fatalf("an invalid id passed: %q", id)
			}
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var again wireEvent
		if err := decodeJSON(b, &again); err != nil {
			t.Fatalf("a valid event re-encodes to a body that fails: %v: %s", err, b)
		}
		ev2, verr := again.validate("", lim)
		if verr != nil {
			t.Fatalf("a valid event re-validates with %v", verr)
		}
		b2, _ := json.Marshal(ev2)
		if string(b) != string(b2) {
			t.Fatalf("the round trip changed the event:\n%s\n%s", b, b2)
		}
	})
}

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
