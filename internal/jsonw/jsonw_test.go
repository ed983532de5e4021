package jsonw

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

var samples = []string{
	"", "plain", `quote " and \ backslash`, "\b\f\n\r\t\x00\x01\x1f\x7f",
	"<script>&amp;</script>", "α β γ — 日本語 😀", "line\u2028sep\u2029para",
	"bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate half", string([]byte{0xe2, 0x80}),
}

func TestAppendStringIsEncodingJSON(t *testing.T) {
	for _, s := range samples {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendString([]byte("x"), s))[1:], "%q", s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range samples {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, want)
		}
	})
}

var compactSamples = []string{
	`{}`, `[]`, `1`, `"<&>"`, ` { "a" : [ 1 , 2.5e3 , true, null ] ,"b":{"c":"x y"} } `,
	`"\u003c already escaped \" quote \\"`, "\"line\u2028sep\u2029\"", `{"k":"tab\there"}`,
}

func TestAppendCompactIsEncodingJSON(t *testing.T) {
	for _, s := range compactSamples {
		want, err := json.Marshal(json.RawMessage(s))
		require.NoError(t, err, s)
		require.Equal(t, string(want), string(AppendCompact([]byte("x"), []byte(s)))[1:], "%s", s)
	}
}

func FuzzAppendCompact(f *testing.F) {
	for _, s := range compactSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		want, err := json.Marshal(json.RawMessage(raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendCompact(nil, raw); string(got) != string(want) {
			t.Fatalf("%q: got %s, encoding/json %s", raw, got, want)
		}
	})
}

func BenchmarkAppendString(b *testing.B) {
	s := "a message of a typical size for an agent hand-off, about one line of text"
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}
