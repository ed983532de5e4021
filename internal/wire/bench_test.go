package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// BenchmarkDecodeAndValidate measures validation: the strict JSON check,
// decoding into the wire shape, and SPEC's field rules; "reference" is the
// generic path (CheckJSON, then encoding/json), which deliveries from peers
// take.
func BenchmarkDecodeAndValidate(b *testing.B) {
	body := []byte(testkit.SubmitBody)
	lim := Limits{MaxMessageBytes: 256 << 10, MaxMetadataKeys: 50}
	for _, tc := range []struct {
		name   string
		decode func([]byte, *DecodedEvent) *Error
	}{
		{"DecodeEvent", DecodeEvent},
		{"reference", func(data []byte, w *DecodedEvent) *Error { return DecodeJSON(data, w) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var w DecodedEvent
				if err := tc.decode(body, &w); err != nil {
					b.Fatal(err)
				}
				if _, err := w.Validate("", lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeDelivery measures the decoding of a peer's delivery to
// 1,000 recipients (the cross-node fan-out's body), by DecodeDelivery and
// by the generic path.
func BenchmarkDecodeDelivery(b *testing.B) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint("bench-", i)
	}
	body, err := json.Marshal(map[string]any{"recipient_ids": ids, "session_id": "s", "event": json.RawMessage(testkit.SubmitBody)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("DecodeDelivery", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var w DecodedDelivery
			if err := DecodeDelivery(body, &w); err != nil || len(w.RecipientIDs) != 1000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var w struct {
				RecipientIDs []string      `json:"recipient_ids"`
				SessionID    *string       `json:"session_id"`
				Event        *DecodedEvent `json:"event"`
			}
			if err := DecodeJSON(body, &w); err != nil || len(w.RecipientIDs) != 1000 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeEvent measures the one encoding of an event per submit:
// the hand-built encoder and encoding/json, which it matches byte for byte.
func BenchmarkEncodeEvent(b *testing.B) {
	var w DecodedEvent
	if err := DecodeEvent([]byte(testkit.SubmitBody), &w); err != nil {
		b.Fatal(err)
	}
	ev, verr := w.Validate("", Limits{MaxMessageBytes: 256 << 10, MaxMetadataKeys: 50})
	if verr != nil {
		b.Fatal(verr)
	}
	ev.EventID = NewEventID()
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = ev.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCheckManyKeys: a 1 MiB body of 100,000-odd metadata keys. The
// duplicate-key check compared every pair before, 20 s per body.
func BenchmarkCheckManyKeys(b *testing.B) {
	var body strings.Builder
	body.WriteString(`{"metadata":{"k0":0`)
	for i := 1; body.Len() < 1<<20-16; i++ {
		fmt.Fprintf(&body, `,"k%d":%d`, i, i%10)
	}
	body.WriteString(`}}`)
	data := []byte(body.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := CheckJSON(data); err != nil {
			b.Fatal(err)
		}
	}
}
