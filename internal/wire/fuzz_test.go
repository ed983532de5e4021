package wire

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchyard-gw/switchyard/internal/ident"
)

// FuzzEventDecoding: no body makes the vetting, decoding or validation
// panic; DecodeEvent answers what CheckJSON + json.Unmarshal answer (but
// for field names in another case, which only encoding/json takes); and
// every event that passes re-encodes to JSON that passes again, unchanged.
func FuzzEventDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"sender_id":"agent-α","sender_type":"ai","event_type":"message","message":"hi","session_id":"s1"}`,
		`{"sender_id":"a","sender_type":"human","event_type":"m","recipient_id":"b","metadata":{"k":[1,{"x":null}]}}`,
		`{"sender_id":"a","sender_id":"b"}`,
		`{"sender_id":"\ud800"}`,
		`{"sender_id":"a\u0000b"}`,
		`[1,2]`, `"x"`, `{`, `{"a":1e999}`, `{"sender_gateway_url":"https://u@h/"}`,
		`{"sender_id":1,"metadata":"x"}`, `{"sender\u005fid":"a","event_id":null,"metadata":null}`,
		`{"SENDER_ID":"a"}`, `{"metadata":{"k":{"k":[]}},"recipient_id":"r","event_id":"e\n"}`,
	} {
		f.Add([]byte(seed))
	}
	lim := Limits{MaxMessageBytes: 1 << 10, MaxMetadataKeys: 50}
	f.Fuzz(func(t *testing.T, data []byte) {
		var w DecodedEvent
		derr := DecodeEvent(data, &w)
		if !hasFoldedFieldName(data, eventFieldNames) {
			var ref DecodedEvent
			requireSameDecoding(t, data, DecodeJSON(data, &ref), &ref, derr, &w)
		}
		if derr != nil {
			if derr.Status != 400 && derr.Status != 422 {
				t.Fatalf("decode answered %d", derr.Status)
			}
			return
		}
		ev, verr := w.Validate("", lim)
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
		if own, err := ev.AppendJSON(nil); err != nil || string(own) != string(b) {
			t.Fatalf("appendJSON differs from json.Marshal:\n%s\n%s", own, b)
		}
		var again DecodedEvent
		if err := DecodeEvent(b, &again); err != nil {
			t.Fatalf("a valid event re-encodes to a body that fails: %v: %s", err, b)
		}
		ev2, verr := again.Validate("", lim)
		if verr != nil {
			t.Fatalf("a valid event re-validates with %v", verr)
		}
		b2, _ := json.Marshal(ev2)
		if string(b) != string(b2) {
			t.Fatalf("the round trip changed the event:\n%s\n%s", b, b2)
		}
	})
}

var (
	eventFieldNames = []string{"sender_id", "sender_type", "event_type", "message", "session_id",
		"sender_gateway_url", "metadata", "recipient_id", "event_id"}
	deliveryFieldNames = []string{"recipient_id", "recipient_ids", "session_id", "recipient_gateway_url", "event"}
)

// hasFoldedFieldName tells whether a top-level key of data names one of
// names in another case ("SENDER_ID"): encoding/json takes it, the
// decoders of the submit and delivery paths do not.
func hasFoldedFieldName(data []byte, names []string) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return false
	}
	for k := range top {
		for _, name := range names {
			if k != name && strings.EqualFold(k, name) {
				return true
			}
		}
	}
	return false
}

// requireSameDecoding compares a decoder's answer with the reference's
// (CheckJSON + encoding/json), by their JSON forms: they hold every field,
// null when absent, and not the values arrays only the decoders fill.
func requireSameDecoding(t *testing.T, data []byte, refErr *Error, ref any, err *Error, got any) {
	t.Helper()
	if (refErr == nil) != (err == nil) {
		t.Fatalf("%s: reference error %v, decoder error %v", data, refErr, err)
	}
	if err != nil {
		if refErr.Status != err.Status || refErr.Code != err.Code || refErr.Field != err.Field {
			t.Fatalf("%s: reference error %+v, decoder error %+v", data, refErr, err)
		}
		return
	}
	a, _ := json.Marshal(ref)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("%s: decoded differently:\nreference %s\ndecoder   %s", data, a, b)
	}
}

// FuzzDeliveryDecoding: DecodeDelivery answers what CheckJSON +
// encoding/json answer (but for field names in another case, at either
// level), and never panics.
func FuzzDeliveryDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"recipient_ids":["a","b"],"session_id":"s","event":{"sender_id":"x","sender_type":"ai","event_type":"m"}}`,
		`{"recipient_id":"r","event":{"sender_id":5}}`, `{"recipient_ids":[1,null,"x"]}`, `{"recipient_ids":[null,"x\u0041"]}`, `{"recipient_ids":"x"}`,
		`{"event":[]}`, `{"event":null,"recipient_ids":null}`, `{"EVENT":{}}`, `{"event":{"Sender_ID":"x"}}`,
		`{"recipient_gateway_url":1,"event":{"metadata":"x"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var w DecodedDelivery
		err := DecodeDelivery(data, &w)
		if hasFoldedFieldName(data, deliveryFieldNames) {
			return
		}
		var top struct {
			Event json.RawMessage `json:"event"`
		}
		if json.Unmarshal(data, &top) == nil && hasFoldedFieldName(top.Event, eventFieldNames) {
			return
		}
		var ref struct {
			RecipientID         *string       `json:"recipient_id"`
			RecipientIDs        []string      `json:"recipient_ids"`
			SessionID           *string       `json:"session_id"`
			RecipientGatewayURL *string       `json:"recipient_gateway_url"`
			Event               *DecodedEvent `json:"event"`
		}
		requireSameDecoding(t, data, DecodeJSON(data, &ref), &ref, err, &w)
	})
}
