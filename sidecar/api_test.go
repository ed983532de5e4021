package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of the REST surface (SPEC section 2) and of authentication and the
// listen check (SPEC section 6), against real nodes over real sockets.

const (
	apiEventsPath     = "/v1/gateway/events"
	apiDeliveriesPath = "/v1/gateway/deliveries"
)

// apiStr is s as a JSON string.
func apiStr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// apiObject builds a JSON object from base and then kv, both pairs of key
// and raw JSON value. A later pair replaces an earlier one in place; a raw
// value of "" removes the key.
func apiObject(base []string, kv ...string) string {
	if len(base)%2 != 0 || len(kv)%2 != 0 {
		panic("apiObject takes key/value pairs")
	}
	var keys []string
	vals := map[string]string{}
	for _, pairs := range [][]string{base, kv} {
		for i := 0; i < len(pairs); i += 2 {
			if _, ok := vals[pairs[i]]; !ok {
				keys = append(keys, pairs[i])
			}
			vals[pairs[i]] = pairs[i+1]
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for _, k := range keys {
		if vals[k] == "" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(apiStr(k) + ":" + vals[k])
	}
	b.WriteByte('}')
	return b.String()
}

// apiEv is a valid event from alice to session s, changed by kv (see apiObject).
func apiEv(kv ...string) string {
	return apiObject([]string{
		"sender_id", `"alice"`, "sender_type", `"human"`, "event_type", `"message"`, "session_id", `"s"`,
	}, kv...)
}

// manyKeys is a JSON object of n distinct keys followed by a repeat of key
// number dup.
func manyKeys(n, dup int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	fmt.Fprintf(&b, `"k%d":0}`, dup)
	return b.String()
}

// apiDelivery is a valid delivery of a valid event to rcv, changed by kv.
func apiDelivery(kv ...string) string {
	return apiObject([]string{
		"recipient_id", `"rcv"`,
		"event", `{"sender_id":"alice","sender_type":"ai","event_type":"message","session_id":"s","message":"hi"}`,
	}, kv...)
}

// apiDeliveryEv is a delivery to rcv of apiEv(kv...).
func apiDeliveryEv(kv ...string) string {
	return apiDelivery("event", apiEv(kv...))
}

// apiMeta is a metadata object with n keys k0..k(n-1).
func apiMeta(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":%d`, i, i)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// apiRequireError checks an error answer: its status, the error body's
// code and field (absent when field is ""), and a detail a person can read.
func apiRequireError(t testing.TB, r apiResponse, status int, code, field string) {
	t.Helper()
	require.Equal(t, status, r.Status, "answer: %s", r.Raw)
	require.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "application/json"),
		"an error answer is JSON, got Content-Type %q: %s", r.Header.Get("Content-Type"), r.Raw)
	require.NotNil(t, r.Body, "answer: %s", r.Raw)
	assert.Equal(t, "error", r.Body["status"], "answer: %s", r.Raw)
	assert.Equal(t, code, r.Body["code"], "answer: %s", r.Raw)
	if field == "" {
		assert.NotContains(t, r.Body, "field", "answer: %s", r.Raw)
	} else {
		assert.Equal(t, field, r.Body["field"], "answer: %s", r.Raw)
	}
	detail, _ := r.Body["detail"].(string)
	assert.NotEmpty(t, strings.TrimSpace(detail), "answer: %s", r.Raw)
}

// apiPut adds participant to session with PUT and an optional body.
func apiPut(t testing.TB, n *Node, session, participant string, body []byte, header map[string]string) apiResponse {
	t.Helper()
	u := n.URL() + "/v1/gateway/sessions/" + url.PathEscape(session) + "/participants/" + url.PathEscape(participant)
	return do(t, http.MethodPut, u, body, header)
}

// apiNextEvent reads the next frame, requires it to be an event frame with
// seq want, and returns it and its inner event.
func apiNextEvent(t testing.TB, c *client, want uint64) (frame, inner map[string]any) {
	t.Helper()
	frame = c.Next()
	require.Equal(t, "event", frame["type"], "frame: %v", frame)
	require.Equal(t, want, seqOf(frame), "frame: %v", frame)
	inner, ok := frame["event"].(map[string]any)
	require.True(t, ok, "an event frame carries the event object: %v", frame)
	return frame, inner
}

// apiBadCase is one request that must be refused.
type apiBadCase struct {
	name   string
	body   string
	header map[string]string
	status int
	code   string
	field  string
}

func TestAPISubmitRejectsBadInput(t *testing.T) {
	n := startNode(t, Config{MaxMessageBytes: 1024})
	bob, _ := attach(t, n, "bob", url.Values{"session_id": {"s"}}, nil)
	// alice is alone in solo; carol is alone in other.
	require.Equal(t, http.StatusOK, apiPut(t, n, "solo", "alice", nil, nil).Status)
	require.Equal(t, http.StatusOK, apiPut(t, n, "other", "carol", nil, nil).Status)

	// The base event is valid: every case below breaks exactly one rule.
	r := postJSON(t, n.URL()+apiEventsPath, apiEv("message", `"control"`), nil)
	require.Equal(t, http.StatusOK, r.Status, "the base event must be accepted: %s", r.Raw)
	_, inner := apiNextEvent(t, bob, 1)
	require.Equal(t, "control", inner["message"])

	long := func(n int) string { return apiStr(strings.Repeat("x", n)) }
	const (
		s422 = http.StatusUnprocessableEntity
		s400 = http.StatusBadRequest
		s404 = http.StatusNotFound
	)
	cases := []apiBadCase{
		// Required fields.
		{name: "missing sender_id", body: apiEv("sender_id", ""), status: s422, code: "missing_field", field: "sender_id"},
		{name: "missing sender_type", body: apiEv("sender_type", ""), status: s422, code: "missing_field", field: "sender_type"},
		{name: "missing event_type", body: apiEv("event_type", ""), status: s422, code: "missing_field", field: "event_type"},
		{name: "neither session_id nor recipient_id", body: apiEv("session_id", ""), status: s422, code: "missing_field", field: "session_id"},

		// Wrong JSON types.
		{name: "sender_id number", body: apiEv("sender_id", `5`), status: s422, code: "invalid_type", field: "sender_id"},
		{name: "sender_type bool", body: apiEv("sender_type", `true`), status: s422, code: "invalid_type", field: "sender_type"},
		{name: "event_type array", body: apiEv("event_type", `["message"]`), status: s422, code: "invalid_type", field: "event_type"},
		{name: "message number", body: apiEv("message", `5`), status: s422, code: "invalid_type", field: "message"},
		{name: "session_id object", body: apiEv("session_id", `{}`), status: s422, code: "invalid_type", field: "session_id"},
		{name: "recipient_id number", body: apiEv("recipient_id", `5`), status: s422, code: "invalid_type", field: "recipient_id"},
		{name: "event_id number", body: apiEv("event_id", `5`), status: s422, code: "invalid_type", field: "event_id"},
		{name: "sender_gateway_url number", body: apiEv("sender_gateway_url", `1`), status: s422, code: "invalid_type", field: "sender_gateway_url"},
		{name: "metadata string", body: apiEv("metadata", `"x"`), status: s422, code: "invalid_type", field: "metadata"},
		{name: "metadata array", body: apiEv("metadata", `[1]`), status: s422, code: "invalid_type", field: "metadata"},

		// sender_type values.
		{name: "sender_type robot", body: apiEv("sender_type", `"robot"`), status: s422, code: "invalid_field", field: "sender_type"},
		{name: "sender_type upper case", body: apiEv("sender_type", `"AI"`), status: s422, code: "invalid_field", field: "sender_type"},
		{name: "sender_type empty", body: apiEv("sender_type", `""`), status: s422, code: "invalid_field", field: "sender_type"},

		// Empty ids.
		{name: "empty sender_id", body: apiEv("sender_id", `""`), status: s422, code: "invalid_field", field: "sender_id"},
		{name: "empty event_type", body: apiEv("event_type", `""`), status: s422, code: "invalid_field", field: "event_type"},
		{name: "empty session_id", body: apiEv("session_id", `""`), status: s422, code: "invalid_field", field: "session_id"},
		{name: "empty recipient_id", body: apiEv("recipient_id", `""`), status: s422, code: "invalid_field", field: "recipient_id"},
		{name: "empty event_id", body: apiEv("event_id", `""`), status: s422, code: "invalid_field", field: "event_id"},

		// Over-long ids.
		{name: "sender_id 257 bytes", body: apiEv("sender_id", long(257)), status: s422, code: "invalid_field", field: "sender_id"},
		{name: "event_type 129 bytes", body: apiEv("event_type", long(129)), status: s422, code: "invalid_field", field: "event_type"},
		{name: "session_id 257 bytes", body: apiEv("session_id", long(257)), status: s422, code: "invalid_field", field: "session_id"},
		{name: "recipient_id 257 bytes", body: apiEv("recipient_id", long(257)), status: s422, code: "invalid_field", field: "recipient_id"},
		{name: "event_id 129 bytes", body: apiEv("event_id", long(129)), status: s422, code: "invalid_field", field: "event_id"},
		{name: "sender_id 129 two-byte runes", body: apiEv("sender_id", apiStr(strings.Repeat("é", 129))), status: s422, code: "invalid_field", field: "sender_id"},

		// Control characters (escaped: a raw one is not JSON at all).
		{name: "newline in sender_id", body: apiEv("sender_id", `"a\nb"`), status: s422, code: "invalid_field", field: "sender_id"},
		{name: "NUL in event_type", body: apiEv("event_type", `"msg\u0000"`), status: s422, code: "invalid_field", field: "event_type"},
		{name: "DEL in session_id", body: apiEv("session_id", `"s\u007f"`), status: s422, code: "invalid_field", field: "session_id"},
		{name: "C1 control in recipient_id", body: apiEv("recipient_id", `"bob\u0085"`), status: s422, code: "invalid_field", field: "recipient_id"},
		{name: "tab in event_id", body: apiEv("event_id", `"e\t1"`), status: s422, code: "invalid_field", field: "event_id"},
		{name: "raw control byte in a string", body: apiEv("sender_id", "\"a\x01b\""), status: s400, code: "invalid_json"},

		// Invalid UTF-8: raw bytes, and lone surrogate escapes.
		{name: "0xff in sender_id", body: apiEv("sender_id", "\"a\xffb\""), status: s422, code: "invalid_utf8", field: "sender_id"},
		{name: "0xff in sender_type", body: apiEv("sender_type", "\"h\xff\""), status: s422, code: "invalid_utf8", field: "sender_type"},
		{name: "0xff in event_type", body: apiEv("event_type", "\"\xffmsg\""), status: s422, code: "invalid_utf8", field: "event_type"},
		{name: "0xff in session_id", body: apiEv("session_id", "\"s\xff\""), status: s422, code: "invalid_utf8", field: "session_id"},
		{name: "0xff in recipient_id", body: apiEv("recipient_id", "\"b\xffob\""), status: s422, code: "invalid_utf8", field: "recipient_id"},
		{name: "0xff in event_id", body: apiEv("event_id", "\"e\xff\""), status: s422, code: "invalid_utf8", field: "event_id"},
		{name: "0xff in message", body: apiEv("message", "\"hello \xff\""), status: s422, code: "invalid_utf8", field: "message"},
		{name: "truncated sequence in sender_id", body: apiEv("sender_id", "\"a\xe2\x82\""), status: s422, code: "invalid_utf8", field: "sender_id"},
		{name: "overlong encoding in sender_id", body: apiEv("sender_id", "\"a\xc0\xaf\""), status: s422, code: "invalid_utf8", field: "sender_id"},
		{name: "UTF-8 encoded surrogate in sender_id", body: apiEv("sender_id", "\"a\xed\xa0\x80\""), status: s422, code: "invalid_utf8", field: "sender_id"},
		{name: "lone high surrogate in sender_id", body: apiEv("sender_id", `"\ud800"`), status: s422, code: "invalid_utf8", field: "sender_id"},
		{name: "lone low surrogate in session_id", body: apiEv("session_id", `"s\udc00"`), status: s422, code: "invalid_utf8", field: "session_id"},
		{name: "high surrogate before a non-surrogate in event_id", body: apiEv("event_id", `"\ud800\u0041"`), status: s422, code: "invalid_utf8", field: "event_id"},
		{name: "lone surrogate in recipient_id", body: apiEv("recipient_id", `"bob\ud800"`), status: s422, code: "invalid_utf8", field: "recipient_id"},
		{name: "0xff in a metadata key", body: apiEv("metadata", "{\"k\xff\":1}"), status: s422, code: "invalid_utf8", field: "metadata"},
		{name: "lone surrogate in a nested metadata value", body: apiEv("metadata", `{"k":{"x":["\ud800"]}}`), status: s422, code: "invalid_utf8", field: "metadata"},

		// Message size (this node's limit is 1024 bytes).
		{name: "message 1025 bytes", body: apiEv("message", long(1025)), status: s422, code: "message_too_large", field: "message"},
		{name: "message 513 two-byte runes", body: apiEv("message", apiStr(strings.Repeat("é", 513))), status: s422, code: "message_too_large", field: "message"},

		// Metadata.
		{name: "metadata 51 keys", body: apiEv("metadata", apiMeta(51)), status: s422, code: "too_many_keys", field: "metadata"},
		{name: "metadata empty key", body: apiEv("metadata", `{"":1}`), status: s422, code: "invalid_field", field: "metadata"},
		{name: "metadata key 129 bytes", body: apiEv("metadata", "{"+long(129)+":1}"), status: s422, code: "invalid_field", field: "metadata"},

		// sender_gateway_url.
		{name: "gateway url ftp", body: apiEv("sender_gateway_url", `"ftp://gw.example.com"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url without scheme", body: apiEv("sender_gateway_url", `"gw.example.com"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url relative", body: apiEv("sender_gateway_url", `"/v1/gateway"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url without host", body: apiEv("sender_gateway_url", `"https://"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url empty", body: apiEv("sender_gateway_url", `""`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url with credentials", body: apiEv("sender_gateway_url", `"https://user:pw@gw.example.com"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url with user only", body: apiEv("sender_gateway_url", `"http://user@gw.example.com"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		{name: "gateway url with query", body: apiEv("sender_gateway_url", `"https://gw.example.com/?x=1"`), status: s422, code: "invalid_url", field: "sender_gateway_url"},
		// No allow-list can be configured yet, so every gateway is refused.
		{name: "valid https gateway url not allowed", body: apiEv("sender_gateway_url", `"https://gw.example.com/base"`), status: s422, code: "gateway_url_not_allowed", field: "sender_gateway_url"},
		{name: "valid http gateway url not allowed", body: apiEv("sender_gateway_url", `"http://127.0.0.1:9"`), status: s422, code: "gateway_url_not_allowed", field: "sender_gateway_url"},

		// Bodies that are not one JSON object.
		{name: "truncated JSON", body: `{"sender_id":"alice","sender_type":"hu`, status: s400, code: "invalid_json"},
		{name: "unterminated object", body: `{"sender_id":"alice"`, status: s400, code: "invalid_json"},
		{name: "trailing comma", body: `{"sender_id":"alice",}`, status: s400, code: "invalid_json"},
		{name: "array body", body: "[" + apiEv() + "]", status: s400, code: "invalid_json"},
		{name: "number body", body: `5`, status: s400, code: "invalid_json"},
		{name: "string body", body: `"event"`, status: s400, code: "invalid_json"},
		{name: "null body", body: `null`, status: s400, code: "invalid_json"},
		{name: "empty body", body: ``, status: s400, code: "invalid_json"},
		{name: "whitespace body", body: " \n\t ", status: s400, code: "invalid_json"},
		{name: "two objects", body: apiEv() + apiEv(), status: s400, code: "invalid_json"},
		{name: "trailing garbage", body: apiEv() + "x", status: s400, code: "invalid_json"},

		// Duplicate keys: encoding/json would silently keep the last one.
		{name: "duplicate sender_id", body: `{"sender_id":"alice","sender_id":"mallory","sender_type":"human","event_type":"message","session_id":"s"}`,
			status: s400, code: "duplicate_key", field: "sender_id"},
		{name: "duplicate sender_id spelled with an escape", body: `{"sender_id":"alice","sender\u005fid":"mallory","sender_type":"human","event_type":"message","session_id":"s"}`,
			status: s400, code: "duplicate_key", field: "sender_id"},
		{name: "duplicate session_id", body: `{"session_id":"s","sender_id":"alice","sender_type":"human","event_type":"message","session_id":"other"}`,
			status: s400, code: "duplicate_key", field: "session_id"},
		{name: "duplicate metadata key", body: apiEv("metadata", `{"k":1,"k":2}`), status: s400, code: "duplicate_key", field: "metadata"},
		// Past 16 keys the check switches from comparing pairs to a map.
		{name: "duplicate metadata key as the 17th", body: apiEv("metadata", manyKeys(16, 3)), status: s400, code: "duplicate_key", field: "metadata"},
		{name: "duplicate metadata key among 40", body: apiEv("metadata", manyKeys(39, 30)), status: s400, code: "duplicate_key", field: "metadata"},
		// Field names match exactly: another case is an unknown field.
		{name: "sender_id in capitals", body: `{"SENDER_ID":"alice","sender_type":"human","event_type":"message","session_id":"s"}`,
			status: s422, code: "missing_field", field: "sender_id"},

		// Content types that are not JSON.
		{name: "text/plain", body: apiEv(), header: map[string]string{"Content-Type": "text/plain"},
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "form", body: apiEv(), header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "unparsable content type", body: apiEv(), header: map[string]string{"Content-Type": "application/json; ="},
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},

		// No recipient.
		{name: "unknown session", body: apiEv("session_id", `"nosuch"`), status: s404, code: "recipient_not_found"},
		{name: "unknown recipient_id", body: apiEv("session_id", "", "recipient_id", `"nobody"`), status: s404, code: "recipient_not_found"},
		{name: "unknown recipient_id in a known session", body: apiEv("recipient_id", `"nobody"`), status: s404, code: "recipient_not_found"},
		{name: "recipient_id not in the given session", body: apiEv("session_id", `"other"`, "recipient_id", `"bob"`), status: s404, code: "recipient_not_found"},
		{name: "session whose only member is the sender", body: apiEv("session_id", `"solo"`), status: s404, code: "recipient_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := postJSON(t, n.URL()+apiEventsPath, tc.body, tc.header)
			apiRequireError(t, r, tc.status, tc.code, tc.field)
		})
	}

	// None of the refused events reached bob: the next one he gets is this.
	submit(t, n, map[string]any{"sender_id": "alice", "sender_type": "human", "event_type": "message",
		"session_id": "s", "message": "sentinel"})
	_, inner = apiNextEvent(t, bob, 2)
	assert.Equal(t, "sentinel", inner["message"])
}

func TestAPISubmitAcceptsLimitValues(t *testing.T) {
	n := startNode(t, Config{MaxMessageBytes: 1024})
	rcv := strings.Repeat("r", 256)
	longSession := strings.Repeat("s", 256)
	c, _ := attach(t, n, rcv, url.Values{"session_id": {"s", longSession}}, nil)

	cases := []struct {
		name   string
		body   string
		header map[string]string
		key    string // of the delivered event
		want   any
	}{
		{name: "sender_id 256 bytes", body: apiEv("sender_id", apiStr(strings.Repeat("a", 256))), key: "sender_id", want: strings.Repeat("a", 256)},
		{name: "sender_id multi-byte", body: apiEv("sender_id", apiStr("agent-α")), key: "sender_id", want: "agent-α"},
		{name: "sender_id surrogate pair escape", body: apiEv("sender_id", `"\ud83d\ude00"`), key: "sender_id", want: "😀"},
		{name: "sender_type ai", body: apiEv("sender_type", `"ai"`), key: "sender_type", want: "ai"},
		{name: "event_type 128 bytes", body: apiEv("event_type", apiStr(strings.Repeat("t", 128))), key: "event_type", want: strings.Repeat("t", 128)},
		{name: "session_id 256 bytes", body: apiEv("session_id", apiStr(longSession)), key: "session_id", want: longSession},
		{name: "recipient_id 256 bytes in session", body: apiEv("recipient_id", apiStr(rcv)), key: "recipient_id", want: rcv},
		{name: "recipient_id without session_id", body: apiEv("session_id", "", "recipient_id", apiStr(rcv)), key: "recipient_id", want: rcv},
		{name: "event_id 128 bytes", body: apiEv("event_id", apiStr(strings.Repeat("e", 128))), key: "event_id", want: strings.Repeat("e", 128)},
		{name: "message at the limit in two-byte runes", body: apiEv("message", apiStr(strings.Repeat("é", 512))), key: "message", want: strings.Repeat("é", 512)},
		{name: "message with escapes", body: apiEv("message", `"line1\nline2 \"q\" \u00e9"`), key: "message", want: "line1\nline2 \"q\" é"},
		{name: "null message", body: apiEv("message", `null`), key: "event_type", want: "message"},
		{name: "metadata 50 keys", body: apiEv("metadata", apiMeta(50)), key: "event_type", want: "message"},
		{name: "metadata key 128 bytes", body: apiEv("metadata", "{"+apiStr(strings.Repeat("k", 128))+":{\"deep\":[1,2,null]}}"),
			key: "metadata", want: map[string]any{strings.Repeat("k", 128): map[string]any{"deep": []any{1.0, 2.0, nil}}}},
		{name: "content type with charset", body: apiEv("message", `"cs"`), header: map[string]string{"Content-Type": "application/json; charset=utf-8"}, key: "message", want: "cs"},
		{name: "content type +json", body: apiEv("message", `"pj"`), header: map[string]string{"Content-Type": "application/vnd.switchyard+json"}, key: "message", want: "pj"},
		{name: "no content type", body: apiEv("message", `"nct"`), header: map[string]string{"Content-Type": ""}, key: "message", want: "nct"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := postJSON(t, n.URL()+apiEventsPath, tc.body, tc.header)
			require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
			assert.Equal(t, "ok", r.Body["status"])
			assert.Equal(t, 1.0, r.Body["recipients"])
			eventID, _ := r.Body["event_id"].(string)
			require.NotEmpty(t, eventID)
			frame, inner := apiNextEvent(t, c, uint64(i+1))
			assert.Equal(t, eventID, frame["event_id"])
			assert.Equal(t, eventID, inner["event_id"])
			assert.Equal(t, tc.want, inner[tc.key], "event: %v", inner)
		})
	}
}

func TestAPISubmitBodyTooLarge(t *testing.T) {
	n := startNode(t, Config{})
	body := make([]byte, 10<<20)
	copy(body, `{"message":"`)
	for i := 12; i < len(body); i++ {
		body[i] = 'a'
	}
	r := postJSON(t, n.URL()+apiEventsPath, body, nil)
	apiRequireError(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "")

	// Just over the default limit of 1 MiB is too large; the node still
	// serves afterwards.
	r = postJSON(t, n.URL()+apiEventsPath, body[:1<<20+1], nil)
	apiRequireError(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "")
	r = do(t, http.MethodGet, n.URL()+"/healthz", nil, nil)
	require.Equal(t, http.StatusOK, r.Status)
}

// apiGatedBody serves `serve` bytes of a body of unknown length, then blocks
// until gate closes (and ends the body) or a safety timeout passes. A node
// that reads past its limit before answering never gets its answer out.
type apiGatedBody struct {
	serve  int64
	served atomic.Int64
	gate   chan struct{}
}

func (b *apiGatedBody) Read(p []byte) (int, error) {
	rest := b.serve - b.served.Load()
	if rest <= 0 {
		select {
		case <-b.gate:
			return 0, io.EOF
		case <-time.After(20 * time.Second):
			return 0, errors.New("the gate never opened")
		}
	}
	k := min(int64(len(p)), rest)
	for i := range p[:k] {
		p[i] = 'a'
	}
	if b.served.Load() == 0 && k > 0 {
		p[0] = '{'
	}
	b.served.Add(k)
	return int(k), nil
}

// TestAPIChunkedBodyStopsAtTheLimit sends bodies of unknown length
// (chunked, no Content-Length) that never end unless the node answers: the
// node must answer 413 having read no more than limit+slack bytes.
func TestAPIChunkedBodyStopsAtTheLimit(t *testing.T) {
	const limit = 1 << 20 // the default --max-body-bytes
	n := startNode(t, Config{})
	cases := []struct {
		name  string
		path  string
		slack int64
	}{
		{name: "events, near the limit", path: apiEventsPath, slack: 64 << 10},
		{name: "events, bounded", path: apiEventsPath, slack: 512 << 10},
		{name: "deliveries, bounded", path: apiDeliveriesPath, slack: 512 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := &apiGatedBody{serve: limit + tc.slack, gate: make(chan struct{})}
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			req, err := http.NewRequest(http.MethodPost, n.URL()+tc.path, body)
			require.NoError(t, err)
			req.ContentLength = -1 // unknown: sent chunked, without Content-Length
			req.Header.Set("Content-Type", "application/json")

			resp, err := hc.Do(req)
			close(body.gate) // let the transport finish its write, whatever happened
			require.NoError(t, err, "the node must answer having read at most %d bytes", limit+tc.slack)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			r := apiResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
			require.NoError(t, json.Unmarshal(raw, &r.Body), "answer: %s", raw)
			apiRequireError(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "")
			served := body.served.Load()
			assert.Greater(t, served, int64(limit), "the node answered before the body passed its limit")
			assert.LessOrEqual(t, served, limit+tc.slack)
		})
	}
}

func TestAPISubmitIgnoresAndDropsUnknownFields(t *testing.T) {
	n := startNode(t, Config{})
	bob, _ := attach(t, n, "bob", url.Values{"session_id": {"s"}}, nil)

	body := apiEv("message", `"hi"`, "zzz_unknown", `{"nested":[1,"two"]}`, "type", `"event"`, "seq", `99`,
		"metadata", `{"k":"v"}`)
	r := postJSON(t, n.URL()+apiEventsPath, body, nil)
	require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)

	frame, inner := apiNextEvent(t, bob, 1)
	assert.Equal(t, r.Body["event_id"], frame["event_id"])
	assert.Equal(t, "s", frame["session_id"])
	known := map[string]bool{"sender_id": true, "sender_type": true, "event_type": true, "message": true,
		"session_id": true, "sender_gateway_url": true, "metadata": true, "recipient_id": true, "event_id": true}
	for k := range inner {
		assert.True(t, known[k], "the delivered event carries the unknown field %q: %v", k, inner)
	}
	assert.NotContains(t, inner, "zzz_unknown")
	assert.Equal(t, "alice", inner["sender_id"])
	assert.Equal(t, "human", inner["sender_type"])
	assert.Equal(t, "message", inner["event_type"])
	assert.Equal(t, "hi", inner["message"])
	assert.Equal(t, map[string]any{"k": "v"}, inner["metadata"])
}

func TestAPIDeliveriesRejectBadInput(t *testing.T) {
	n := startNode(t, Config{MaxMessageBytes: 1024})
	rcv, _ := attach(t, n, "rcv", nil, nil)
	u := n.URL() + apiDeliveriesPath

	r := postJSON(t, u, apiDelivery(), nil)
	require.Equal(t, http.StatusOK, r.Status, "the base delivery must be accepted: %s", r.Raw)
	_, inner := apiNextEvent(t, rcv, 1)
	require.Equal(t, "hi", inner["message"])

	const (
		s422 = http.StatusUnprocessableEntity
		s400 = http.StatusBadRequest
		s404 = http.StatusNotFound
	)
	cases := []apiBadCase{
		{name: "missing recipient_id", body: apiDelivery("recipient_id", ""), status: s422, code: "missing_field", field: "recipient_id"},
		{name: "empty recipient_ids and no recipient_id", body: apiDelivery("recipient_id", "", "recipient_ids", `[]`), status: s422, code: "missing_field", field: "recipient_id"},
		{name: "empty recipient_id", body: apiDelivery("recipient_id", `""`), status: s422, code: "invalid_field", field: "recipient_id"},
		{name: "recipient_id 257 bytes", body: apiDelivery("recipient_id", apiStr(strings.Repeat("r", 257))), status: s422, code: "invalid_field", field: "recipient_id"},
		{name: "recipient_id number", body: apiDelivery("recipient_id", `5`), status: s422, code: "invalid_type", field: "recipient_id"},
		{name: "recipient_id invalid UTF-8", body: apiDelivery("recipient_id", "\"r\xff\""), status: s422, code: "invalid_utf8", field: "recipient_id"},
		{name: "recipient_ids with an empty id", body: apiDelivery("recipient_id", "", "recipient_ids", `["rcv",""]`), status: s422, code: "invalid_field", field: "recipient_ids"},
		{name: "recipient_ids string", body: apiDelivery("recipient_id", "", "recipient_ids", `"rcv"`), status: s422, code: "invalid_type", field: "recipient_ids"},
		{name: "empty session_id", body: apiDelivery("session_id", `""`), status: s422, code: "invalid_field", field: "session_id"},
		{name: "session_id 257 bytes", body: apiDelivery("session_id", apiStr(strings.Repeat("s", 257))), status: s422, code: "invalid_field", field: "session_id"},
		{name: "recipient_gateway_url not a URL", body: apiDelivery("recipient_gateway_url", `"nope"`), status: s422, code: "invalid_url", field: "recipient_gateway_url"},

		{name: "missing event", body: apiDelivery("event", ""), status: s422, code: "missing_field", field: "event"},
		{name: "event string", body: apiDelivery("event", `"x"`), status: s422, code: "invalid_type", field: "event"},
		{name: "event missing sender_id", body: apiDeliveryEv("sender_id", ""), status: s422, code: "missing_field", field: "event.sender_id"},
		{name: "event missing sender_type", body: apiDeliveryEv("sender_type", ""), status: s422, code: "missing_field", field: "event.sender_type"},
		{name: "event missing event_type", body: apiDeliveryEv("event_type", ""), status: s422, code: "missing_field", field: "event.event_type"},
		{name: "event sender_id number", body: apiDeliveryEv("sender_id", `5`), status: s422, code: "invalid_type", field: "event.sender_id"},
		{name: "event metadata string", body: apiDeliveryEv("metadata", `"x"`), status: s422, code: "invalid_type", field: "event.metadata"},
		{name: "event array", body: apiDelivery("event", `[]`), status: s422, code: "invalid_type", field: "event"},
		{name: "event null", body: apiDelivery("event", `null`), status: s422, code: "missing_field", field: "event"},
		{name: "event.sender_id in capitals", body: apiDelivery("event", `{"SENDER_ID":"a","sender_type":"ai","event_type":"message"}`),
			status: s422, code: "missing_field", field: "event.sender_id"},
		{name: "event sender_type robot", body: apiDeliveryEv("sender_type", `"robot"`), status: s422, code: "invalid_field", field: "event.sender_type"},
		{name: "event sender_id 257 bytes", body: apiDeliveryEv("sender_id", apiStr(strings.Repeat("a", 257))), status: s422, code: "invalid_field", field: "event.sender_id"},
		{name: "event event_id 129 bytes", body: apiDeliveryEv("event_id", apiStr(strings.Repeat("e", 129))), status: s422, code: "invalid_field", field: "event.event_id"},
		{name: "event control character in event_type", body: apiDeliveryEv("event_type", `"m\u0001"`), status: s422, code: "invalid_field", field: "event.event_type"},
		{name: "event sender_id invalid UTF-8", body: apiDeliveryEv("sender_id", "\"a\xff\""), status: s422, code: "invalid_utf8", field: "event.sender_id"},
		{name: "event session_id lone surrogate", body: apiDeliveryEv("session_id", `"\ud800"`), status: s422, code: "invalid_utf8", field: "event.session_id"},
		{name: "event metadata key invalid UTF-8", body: apiDeliveryEv("metadata", "{\"\xff\":1}"), status: s422, code: "invalid_utf8", field: "event.metadata"},
		{name: "event message too large", body: apiDeliveryEv("message", apiStr(strings.Repeat("m", 1025))), status: s422, code: "message_too_large", field: "event.message"},
		{name: "event metadata 51 keys", body: apiDeliveryEv("metadata", apiMeta(51)), status: s422, code: "too_many_keys", field: "event.metadata"},
		{name: "event metadata empty key", body: apiDeliveryEv("metadata", `{"":1}`), status: s422, code: "invalid_field", field: "event.metadata"},
		{name: "event sender_gateway_url ftp", body: apiDeliveryEv("sender_gateway_url", `"ftp://gw.example.com"`), status: s422, code: "invalid_url", field: "event.sender_gateway_url"},
		{name: "event sender_gateway_url with credentials", body: apiDeliveryEv("sender_gateway_url", `"https://u:p@gw.example.com"`), status: s422, code: "invalid_url", field: "event.sender_gateway_url"},
		{name: "event sender_gateway_url not allowed", body: apiDeliveryEv("sender_gateway_url", `"https://gw.example.com"`), status: s422, code: "gateway_url_not_allowed", field: "event.sender_gateway_url"},

		{name: "duplicate event.sender_id", body: apiDelivery("event", `{"sender_id":"a","sender_id":"b","sender_type":"ai","event_type":"message"}`), status: s400, code: "duplicate_key", field: "event.sender_id"},
		{name: "duplicate recipient_id", body: `{"recipient_id":"rcv","recipient_id":"x","event":` + apiEv() + `}`, status: s400, code: "duplicate_key", field: "recipient_id"},
		{name: "duplicate key in event metadata", body: apiDeliveryEv("metadata", `{"a":{"b":1,"b":2}}`), status: s400, code: "duplicate_key", field: "event.metadata"},
		{name: "truncated JSON", body: `{"recipient_id":"rcv","event":{`, status: s400, code: "invalid_json"},
		{name: "array body", body: "[" + apiDelivery() + "]", status: s400, code: "invalid_json"},
		{name: "number body", body: `42`, status: s400, code: "invalid_json"},
		{name: "empty body", body: ``, status: s400, code: "invalid_json"},
		{name: "text/plain", body: apiDelivery(), header: map[string]string{"Content-Type": "text/plain"},
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},

		{name: "unknown recipient", body: apiDelivery("recipient_id", `"ghost"`), status: s404, code: "recipient_not_found"},
		{name: "batch of unknown recipients", body: apiDelivery("recipient_id", "", "recipient_ids", `["ghost","phantom"]`), status: s404, code: "recipient_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			apiRequireError(t, postJSON(t, u, tc.body, tc.header), tc.status, tc.code, tc.field)
		})
	}

	// Nothing refused reached rcv.
	r = postJSON(t, u, apiDeliveryEv("message", `"sentinel"`), nil)
	require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
	_, inner = apiNextEvent(t, rcv, 2)
	assert.Equal(t, "sentinel", inner["message"])
}

func TestAPIDeliveriesReachAttachedParticipants(t *testing.T) {
	n := startNode(t, Config{})
	u := n.URL() + apiDeliveriesPath
	rcv, _ := attach(t, n, "rcv", nil, nil)
	rcv2, _ := attach(t, n, "rcv2", nil, nil)

	t.Run("recipient_id with a session_id of its own", func(t *testing.T) {
		body := apiDelivery("session_id", `"sd"`, "zzz_unknown", `1`,
			"event", apiEv("session_id", `"se"`, "event_id", `"evt-given"`, "message", `"delivered"`, "zzz_unknown", `true`))
		r := postJSON(t, u, body, nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, "ok", r.Body["status"])
		assert.NotContains(t, r.Body, "not_found")

		frame, inner := apiNextEvent(t, rcv, 1)
		assert.Equal(t, "sd", frame["session_id"], "the frame names the delivery's session")
		assert.Equal(t, "evt-given", frame["event_id"])
		assert.Equal(t, "evt-given", inner["event_id"])
		assert.Equal(t, "delivered", inner["message"])
		assert.Equal(t, "alice", inner["sender_id"])
		assert.NotContains(t, inner, "zzz_unknown")
	})

	t.Run("without session_id the event's session is used", func(t *testing.T) {
		r := postJSON(t, u, apiDeliveryEv("session_id", `"se2"`, "message", `"m2"`), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		frame, inner := apiNextEvent(t, rcv, 2)
		assert.Equal(t, "se2", frame["session_id"])
		assert.Equal(t, "m2", inner["message"])
		id, _ := frame["event_id"].(string)
		assert.NotEmpty(t, id, "the node assigns an event_id when the event has none")
	})

	t.Run("batch with one known and one unknown recipient", func(t *testing.T) {
		r := postJSON(t, u, apiDelivery("recipient_id", "", "recipient_ids", `["rcv","ghost"]`, "session_id", `"sb"`,
			"event", apiEv("message", `"batch"`)), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, "ok", r.Body["status"])
		assert.Equal(t, 1.0, r.Body["recipients"])
		assert.Equal(t, []any{"ghost"}, r.Body["not_found"])
		frame, inner := apiNextEvent(t, rcv, 3)
		assert.Equal(t, "sb", frame["session_id"])
		assert.Equal(t, "batch", inner["message"])
	})

	t.Run("batch of two known recipients", func(t *testing.T) {
		r := postJSON(t, u, apiDelivery("recipient_id", "", "recipient_ids", `["rcv","rcv2"]`,
			"event", apiEv("message", `"both"`)), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, 2.0, r.Body["recipients"])
		assert.NotContains(t, r.Body, "not_found")
		f1, in1 := apiNextEvent(t, rcv, 4)
		f2, in2 := apiNextEvent(t, rcv2, 1)
		assert.Equal(t, "both", in1["message"])
		assert.Equal(t, "both", in2["message"])
		assert.Equal(t, f1["event_id"], f2["event_id"], "one event, one event_id")
	})

	t.Run("a recipient named twice in a batch gets the event once", func(t *testing.T) {
		r := postJSON(t, u, apiDelivery("recipient_id", "", "recipient_ids", `["rcv2","rcv2"]`,
			"event", apiEv("message", `"twice"`)), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, 1.0, r.Body["recipients"], "answer: %s", r.Raw)
		_, inner := apiNextEvent(t, rcv2, 2)
		assert.Equal(t, "twice", inner["message"])
		r = postJSON(t, u, apiDelivery("recipient_id", `"rcv2"`, "event", apiEv("message", `"after"`)), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		_, inner = apiNextEvent(t, rcv2, 3)
		assert.Equal(t, "after", inner["message"], "the event named twice was delivered twice")
	})

	t.Run("a participant added with PUT and offline gets it on attach", func(t *testing.T) {
		require.Equal(t, http.StatusOK, apiPut(t, n, "sx", "later", nil, nil).Status)
		r := postJSON(t, u, apiDelivery("recipient_id", `"later"`, "event", apiEv("message", `"waiting"`)), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		later, welcome := attach(t, n, "later", nil, nil)
		assert.Equal(t, 1.0, welcome["seq"])
		_, inner := apiNextEvent(t, later, 1)
		assert.Equal(t, "waiting", inner["message"])
	})
}

// apiStormPost posts body and returns the status; it is safe in goroutines
// (the helpers of main_test.go stop the test, which only its own goroutine
// may do).
func apiStormPost(u, contentType, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func TestAPIBadRequestsLoseNothingAccepted(t *testing.T) {
	n := startNode(t, Config{MaxMessageBytes: 64})
	p, _ := attach(t, n, "p", url.Values{"session_id": {"storm"}}, nil)
	// q is in a session of its own: a recipient_id for p naming it is wrong.
	require.Equal(t, http.StatusOK, apiPut(t, n, "elsewhere", "q", nil, nil).Status)

	storm := func(kv ...string) string {
		return apiEv(append([]string{"session_id", `"storm"`}, kv...)...)
	}
	type bad struct{ path, ct, body string }
	bads := []bad{
		{apiEventsPath, "application/json", `{"sender_id":`},
		{apiEventsPath, "application/json", `[` + storm() + `]`},
		{apiEventsPath, "application/json", ``},
		{apiEventsPath, "application/json", storm("sender_id", `5`)},
		{apiEventsPath, "application/json", storm("sender_type", `"robot"`)},
		{apiEventsPath, "application/json", storm("event_type", "")},
		{apiEventsPath, "application/json", storm("sender_id", "\"x\xff\"")},
		{apiEventsPath, "application/json", storm("sender_id", `"\ud800"`)},
		{apiEventsPath, "application/json", storm("message", apiStr(strings.Repeat("m", 65)))},
		{apiEventsPath, "application/json", storm("metadata", apiMeta(51))},
		{apiEventsPath, "application/json", storm("sender_gateway_url", `"https://gw.example.com"`)},
		{apiEventsPath, "application/json", `{"sender_id":"a","sender_id":"b","sender_type":"ai","event_type":"m","session_id":"storm"}`},
		{apiEventsPath, "text/plain", storm()},
		{apiEventsPath, "application/json", storm("session_id", `"elsewhere"`, "recipient_id", `"p"`)},
		{apiEventsPath, "application/json", storm("session_id", "")},
		{apiDeliveriesPath, "application/json", apiDelivery("recipient_id", `"p"`, "event", storm("sender_id", ""))},
		{apiDeliveriesPath, "application/json", apiDelivery("recipient_id", `"p"`, "event", storm("metadata", `"x"`))},
		{apiDeliveriesPath, "application/json", apiDelivery("recipient_id", "", "event", storm())},
		{apiDeliveriesPath, "application/json", `{"recipient_id":"p","event":` + storm() + `,"event":{}}`},
	}

	const good, workers, perWorker = 100, 4, 60
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				b := bads[(w*perWorker+i)%len(bads)]
				status, err := apiStormPost(n.URL()+b.path, b.ct, b.body)
				if !assert.NoError(t, err) {
					return
				}
				assert.GreaterOrEqual(t, status, 400, "a bad request was accepted: %s", b.body)
			}
		}()
	}
	for i := range good {
		r := submit(t, n, map[string]any{"sender_id": "sender", "sender_type": "ai", "event_type": "message",
			"session_id": "storm", "message": fmt.Sprintf("good-%03d", i)})
		assert.Equal(t, 1.0, r.Body["recipients"])
		b := bads[i%len(bads)]
		status, err := apiStormPost(n.URL()+b.path, b.ct, b.body)
		require.NoError(t, err)
		require.GreaterOrEqual(t, status, 400, "a bad request was accepted: %s", b.body)
	}
	wg.Wait()
	submit(t, n, map[string]any{"sender_id": "sender", "sender_type": "ai", "event_type": "message",
		"session_id": "storm", "message": "last"})

	for i := range good {
		_, inner := apiNextEvent(t, p, uint64(i+1))
		require.Equal(t, fmt.Sprintf("good-%03d", i), inner["message"])
	}
	_, inner := apiNextEvent(t, p, good+1)
	require.Equal(t, "last", inner["message"], "nothing but the good events reached p")
}

func TestAPIResubmitWithSameEventIDIsDeliveredOnce(t *testing.T) {
	n := startNode(t, Config{})
	bob, _ := attach(t, n, "bob", url.Values{"session_id": {"s"}}, nil)
	for range 2 {
		r := postJSON(t, n.URL()+apiEventsPath, apiEv("event_id", `"retry-1"`, "message", `"once"`), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, "retry-1", r.Body["event_id"])
	}
	// Another sender may use the same event_id.
	r := postJSON(t, n.URL()+apiEventsPath, apiEv("sender_id", `"carol"`, "event_id", `"retry-1"`, "message", `"carol's"`), nil)
	require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)

	_, inner := apiNextEvent(t, bob, 1)
	assert.Equal(t, "once", inner["message"])
	_, inner = apiNextEvent(t, bob, 2)
	assert.Equal(t, "carol's", inner["message"], "the retry was delivered again")
}

func TestAPISessionParticipants(t *testing.T) {
	n := startNode(t, Config{})
	sessionURL := func(s string) string { return n.URL() + "/v1/gateway/sessions/" + url.PathEscape(s) }

	t.Run("an empty session is 404", func(t *testing.T) {
		apiRequireError(t, do(t, http.MethodGet, sessionURL("s1"), nil, nil), http.StatusNotFound, "session_not_found", "")
	})

	t.Run("PUT without body adds an ai participant", func(t *testing.T) {
		r := apiPut(t, n, "s1", "p1", nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, "ok", r.Body["status"])
		assert.Equal(t, "s1", r.Body["session_id"])
		assert.Equal(t, "p1", r.Body["participant_id"])
	})

	t.Run("PUT with a body", func(t *testing.T) {
		r := apiPut(t, n, "s1", "p2", []byte(`{"participant_type":"human"}`), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		r = apiPut(t, n, "s1", "p3", []byte(`{}`), nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		r = apiPut(t, n, "s1", "p3", []byte(` {"participant_type":"ai","zzz_unknown":1} `), nil)
		require.Equal(t, http.StatusOK, r.Status, "PUT is idempotent: %s", r.Raw)
	})

	t.Run("GET shows the participants", func(t *testing.T) {
		r := do(t, http.MethodGet, sessionURL("s1"), nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		want := map[string]any{"session_id": "s1", "participants": []any{
			map[string]any{"participant_id": "p1", "participant_type": "ai", "node": n.Name(), "online": false},
			map[string]any{"participant_id": "p2", "participant_type": "human", "node": n.Name(), "online": false},
			map[string]any{"participant_id": "p3", "participant_type": "ai", "node": n.Name(), "online": false},
		}}
		assert.Equal(t, want, r.Body)
	})

	t.Run("an attached participant is online, and offline again when it leaves", func(t *testing.T) {
		c, _ := attach(t, n, "p4", url.Values{"session_id": {"s1"}, "participant_type": {"human"}}, nil)
		online := func() map[string]any {
			r := do(t, http.MethodGet, sessionURL("s1"), nil, nil)
			require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
			for _, v := range r.Body["participants"].([]any) {
				if p := v.(map[string]any); p["participant_id"] == "p4" {
					return p
				}
			}
			return nil
		}
		assert.Equal(t, map[string]any{"participant_id": "p4", "participant_type": "human", "node": n.Name(), "online": true}, online())
		require.NoError(t, c.Conn.CloseNow())
		require.Eventually(t, func() bool {
			p := online()
			return p != nil && p["online"] == false
		}, 5*time.Second, 10*time.Millisecond, "p4 is still online after its connection closed")
	})

	badPuts := []struct {
		apiBadCase
		session, participant string
	}{
		{apiBadCase: apiBadCase{name: "participant_type robot", body: `{"participant_type":"robot"}`,
			status: http.StatusUnprocessableEntity, code: "invalid_field", field: "participant_type"}},
		{apiBadCase: apiBadCase{name: "participant_type empty", body: `{"participant_type":""}`,
			status: http.StatusUnprocessableEntity, code: "invalid_field", field: "participant_type"}},
		{apiBadCase: apiBadCase{name: "participant_type number", body: `{"participant_type":5}`,
			status: http.StatusUnprocessableEntity, code: "invalid_type", field: "participant_type"}},
		{apiBadCase: apiBadCase{name: "gateway_url not allowed", body: `{"participant_type":"ai","gateway_url":"https://gw.example.com"}`,
			status: http.StatusUnprocessableEntity, code: "gateway_url_not_allowed", field: "gateway_url"}},
		{apiBadCase: apiBadCase{name: "gateway_url ftp", body: `{"gateway_url":"ftp://gw.example.com"}`,
			status: http.StatusUnprocessableEntity, code: "invalid_url", field: "gateway_url"}},
		{apiBadCase: apiBadCase{name: "gateway_url with credentials", body: `{"gateway_url":"https://u:p@gw.example.com"}`,
			status: http.StatusUnprocessableEntity, code: "invalid_url", field: "gateway_url"}},
		{apiBadCase: apiBadCase{name: "gateway_url invalid UTF-8", body: "{\"gateway_url\":\"https://gw\xff.example.com\"}",
			status: http.StatusUnprocessableEntity, code: "invalid_utf8", field: "gateway_url"}},
		{apiBadCase: apiBadCase{name: "array body", body: `[]`, status: http.StatusBadRequest, code: "invalid_json"}},
		{apiBadCase: apiBadCase{name: "truncated body", body: `{"participant_type":`, status: http.StatusBadRequest, code: "invalid_json"}},
		{apiBadCase: apiBadCase{name: "duplicate key", body: `{"participant_type":"ai","participant_type":"human"}`,
			status: http.StatusBadRequest, code: "duplicate_key", field: "participant_type"}},
		{apiBadCase: apiBadCase{name: "text/plain", body: `{}`, header: map[string]string{"Content-Type": "text/plain"},
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"}},
		{apiBadCase: apiBadCase{name: "session_id 257 bytes", status: http.StatusUnprocessableEntity, code: "invalid_field", field: "session_id"},
			session: strings.Repeat("s", 257)},
		{apiBadCase: apiBadCase{name: "participant_id 257 bytes", status: http.StatusUnprocessableEntity, code: "invalid_field", field: "participant_id"},
			participant: strings.Repeat("p", 257)},
		{apiBadCase: apiBadCase{name: "control character in participant_id", status: http.StatusUnprocessableEntity, code: "invalid_field", field: "participant_id"},
			participant: "p\x07"},
		{apiBadCase: apiBadCase{name: "invalid UTF-8 in session_id", status: http.StatusUnprocessableEntity, code: "invalid_field", field: "session_id"},
			session: "s\xff"},
	}
	for _, tc := range badPuts {
		t.Run("PUT refuses "+tc.name, func(t *testing.T) {
			session, participant := "s-bad", "p-bad"
			if tc.session != "" {
				session = tc.session
			}
			if tc.participant != "" {
				participant = tc.participant
			}
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			apiRequireError(t, apiPut(t, n, session, participant, body, tc.header), tc.status, tc.code, tc.field)
		})
	}
	t.Run("refused PUTs added nobody", func(t *testing.T) {
		apiRequireError(t, do(t, http.MethodGet, sessionURL("s-bad"), nil, nil), http.StatusNotFound, "session_not_found", "")
		// p-bad is unknown: a submit to it finds nobody.
		r := postJSON(t, n.URL()+apiEventsPath, apiEv("session_id", "", "recipient_id", `"p-bad"`), nil)
		apiRequireError(t, r, http.StatusNotFound, "recipient_not_found", "")
	})

	t.Run("GET refuses a bad session id", func(t *testing.T) {
		apiRequireError(t, do(t, http.MethodGet, sessionURL(strings.Repeat("s", 257)), nil, nil),
			http.StatusUnprocessableEntity, "invalid_field", "session_id")
	})

	t.Run("DELETE removes, then 404", func(t *testing.T) {
		u := sessionURL("s1") + "/participants/p2"
		r := do(t, http.MethodDelete, u, nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		assert.Equal(t, "ok", r.Body["status"])
		apiRequireError(t, do(t, http.MethodDelete, u, nil, nil), http.StatusNotFound, "participant_not_found", "")
		apiRequireError(t, do(t, http.MethodDelete, sessionURL("s1")+"/participants/nobody", nil, nil),
			http.StatusNotFound, "participant_not_found", "")
		apiRequireError(t, do(t, http.MethodDelete, sessionURL("no-such-session")+"/participants/p1", nil, nil),
			http.StatusNotFound, "participant_not_found", "")

		r = do(t, http.MethodGet, sessionURL("s1"), nil, nil)
		require.Equal(t, http.StatusOK, r.Status)
		var ids []any
		for _, v := range r.Body["participants"].([]any) {
			ids = append(ids, v.(map[string]any)["participant_id"])
		}
		assert.Equal(t, []any{"p1", "p3", "p4"}, ids)

		// p2 no longer gets the session's events.
		r = postJSON(t, n.URL()+apiEventsPath, apiEv("session_id", `"s1"`, "recipient_id", `"p2"`), nil)
		apiRequireError(t, r, http.StatusNotFound, "recipient_not_found", "")

		for _, p := range []string{"p1", "p3", "p4"} {
			require.Equal(t, http.StatusOK, do(t, http.MethodDelete, sessionURL("s1")+"/participants/"+p, nil, nil).Status)
		}
		apiRequireError(t, do(t, http.MethodGet, sessionURL("s1"), nil, nil), http.StatusNotFound, "session_not_found", "")
	})
}

func TestAPISessionPathIDs(t *testing.T) {
	n := startNode(t, Config{})
	cases := []struct {
		name, session, participant string
	}{
		{name: "space", session: "team chat", participant: "agent one"},
		{name: "slash", session: "org/team", participant: "agents/one"},
		{name: "plus", session: "a+b", participant: "c+d"},
		{name: "non-ASCII", session: "équipe", participant: "agent-α"},
		{name: "percent sign", session: "50%off", participant: "100%"},
		{name: "escaped escape", session: "s%2Fx", participant: "p%41"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := apiPut(t, n, tc.session, tc.participant, nil, nil)
			require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
			assert.Equal(t, tc.session, r.Body["session_id"])
			assert.Equal(t, tc.participant, r.Body["participant_id"])

			r = do(t, http.MethodGet, n.URL()+"/v1/gateway/sessions/"+url.PathEscape(tc.session), nil, nil)
			require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
			assert.Equal(t, tc.session, r.Body["session_id"])
			ps, _ := r.Body["participants"].([]any)
			require.Len(t, ps, 1)
			assert.Equal(t, tc.participant, ps[0].(map[string]any)["participant_id"])

			// The ids are the same ones the event routes use.
			ev, err := json.Marshal(map[string]any{"sender_id": "x", "sender_type": "ai", "event_type": "m",
				"session_id": tc.session, "recipient_id": tc.participant})
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, postJSON(t, n.URL()+apiEventsPath, ev, nil).Status)

			u := n.URL() + "/v1/gateway/sessions/" + url.PathEscape(tc.session) + "/participants/" + url.PathEscape(tc.participant)
			require.Equal(t, http.StatusOK, do(t, http.MethodDelete, u, nil, nil).Status)
		})
	}
}

func TestAPIPutParticipantGetsWaitingEventsOnAttach(t *testing.T) {
	n := startNode(t, Config{})
	require.Equal(t, http.StatusOK, apiPut(t, n, "s", "late", []byte(`{"participant_type":"human"}`), nil).Status)

	const events = 3
	var ids []any
	for i := 1; i <= events; i++ {
		r := submit(t, n, map[string]any{"sender_id": "alice", "sender_type": "ai", "event_type": "message",
			"session_id": "s", "message": fmt.Sprintf("m%d", i)})
		assert.Equal(t, 1.0, r.Body["recipients"], "the offline participant is a recipient")
		ids = append(ids, r.Body["event_id"])
	}

	late, welcome := attach(t, n, "late", nil, nil)
	assert.Equal(t, float64(events), welcome["seq"])
	assert.Equal(t, true, welcome["resumed"])
	assert.Equal(t, []any{"s"}, welcome["sessions"])
	for i := 1; i <= events; i++ {
		frame, inner := apiNextEvent(t, late, uint64(i))
		assert.Equal(t, ids[i-1], frame["event_id"])
		assert.Equal(t, "s", frame["session_id"])
		assert.Equal(t, fmt.Sprintf("m%d", i), inner["message"])
	}

	// Live events follow the waiting ones.
	submit(t, n, map[string]any{"sender_id": "alice", "sender_type": "ai", "event_type": "message",
		"session_id": "s", "message": "live"})
	_, inner := apiNextEvent(t, late, events+1)
	assert.Equal(t, "live", inner["message"])
}

func TestAPIMembersHealthAndMetrics(t *testing.T) {
	n := startNode(t, Config{})

	members := func() []any {
		r := do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		ms, ok := r.Body["members"].([]any)
		require.True(t, ok, "answer: %s", r.Raw)
		return ms
	}
	ms := members()
	require.Len(t, ms, 1)
	assert.Equal(t, map[string]any{"name": n.Name(), "url": n.URL(), "state": "alive", "participants": 0.0, "self": true}, ms[0])

	p, _ := attach(t, n, "p", url.Values{"session_id": {"s"}}, nil)
	assert.Equal(t, 1.0, members()[0].(map[string]any)["participants"])

	for _, path := range []string{"/healthz", "/readyz"} {
		r := do(t, http.MethodGet, n.URL()+path, nil, nil)
		assert.Equal(t, http.StatusOK, r.Status, "%s: %s", path, r.Raw)
		assert.Equal(t, "ok", r.Body["status"], "%s: %s", path, r.Raw)
	}

	for seq := range 2 { // the second answer is measured by the cached histogram
		submit(t, n, map[string]any{"sender_id": "alice", "sender_type": "ai", "event_type": "message", "session_id": "s"})
		apiNextEvent(t, p, uint64(seq+1))
	}
	apiRequireError(t, postJSON(t, n.URL()+apiEventsPath, `[]`, nil), http.StatusBadRequest, "invalid_json", "")
	for range 2 {
		require.Equal(t, http.StatusNotFound, do(t, http.MethodGet, n.URL()+"/no/such/path", nil, nil).Status)
	}
	// Any token is a method to net/http: the label stays bounded.
	require.Equal(t, http.StatusMethodNotAllowed, do(t, "BREW", n.URL()+"/healthz", nil, nil).Status)

	r := do(t, http.MethodGet, n.URL()+"/metrics", nil, nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.True(t, strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain"), r.Header.Get("Content-Type"))
	text := string(r.Raw)
	for _, want := range []string{
		`switchyard_submits_total{outcome="ok"} 2`,
		`switchyard_submits_total{outcome="invalid_json"} 1`,
		`switchyard_deliveries_total{path="local"} 2`,
		"switchyard_connections_open 1",
		"switchyard_mailbox_events 2",
		`switchyard_http_request_duration_seconds_count{method="POST",route="/v1/gateway/events",status="200"} 2`,
		`switchyard_http_request_duration_seconds_count{method="POST",route="/v1/gateway/events",status="400"} 1`,
		`switchyard_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 2`,
		`switchyard_http_request_duration_seconds_count{method="other",`,
	} {
		assert.Contains(t, text, want)
	}
}

func TestAPIKeys(t *testing.T) {
	n := startNode(t, Config{APIKeys: []string{"k1", "k2"}})
	auth := func(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

	endpoints := []struct{ method, path, body string }{
		{http.MethodPost, apiEventsPath, apiEv()},
		{http.MethodPost, apiDeliveriesPath, apiDelivery()},
		{http.MethodGet, "/v1/gateway/sessions/s", ""},
		{http.MethodPut, "/v1/gateway/sessions/s/participants/p", ""},
		{http.MethodDelete, "/v1/gateway/sessions/s/participants/p", ""},
		{http.MethodGet, "/v1/gateway/members", ""},
		{http.MethodGet, "/v1/gateway/ws?participant_id=p", ""},
		{http.MethodGet, "/v1/gateway/no-such-endpoint", ""},
	}
	refused := []struct {
		name   string
		header map[string]string
	}{
		{"no Authorization", nil},
		{"wrong key", auth("k3")},
		{"key with a suffix", auth("k1x")},
		{"prefix of a key", auth("k")},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}},
		{"no scheme", map[string]string{"Authorization": "k1"}},
		{"basic scheme", map[string]string{"Authorization": "Basic azE6"}},
	}
	for _, ep := range endpoints {
		for _, rf := range refused {
			t.Run(ep.method+" "+ep.path+" "+rf.name, func(t *testing.T) {
				var body []byte
				if ep.body != "" {
					body = []byte(ep.body)
				}
				r := do(t, ep.method, n.URL()+ep.path, body, rf.header)
				apiRequireError(t, r, http.StatusUnauthorized, "unauthorized", "")
				assert.True(t, strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer"),
					"WWW-Authenticate: %q", r.Header.Get("WWW-Authenticate"))
			})
		}
	}

	t.Run("access_token in the query works only for the WebSocket", func(t *testing.T) {
		r := do(t, http.MethodGet, n.URL()+"/v1/gateway/members?access_token=k1", nil, nil)
		apiRequireError(t, r, http.StatusUnauthorized, "unauthorized", "")
	})

	t.Run("both keys work", func(t *testing.T) {
		for _, h := range []map[string]string{auth("k1"), auth("k2"), {"Authorization": "bearer k1"}} {
			r := do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, h)
			require.Equal(t, http.StatusOK, r.Status, "%v: %s", h, r.Raw)
			assert.Empty(t, r.Header.Get("WWW-Authenticate"))
		}
		require.Equal(t, http.StatusOK, apiPut(t, n, "s", "p", nil, auth("k2")).Status)
		r := postJSON(t, n.URL()+apiEventsPath, apiEv(), auth("k1"))
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		r = postJSON(t, n.URL()+apiDeliveriesPath, apiDelivery("recipient_id", `"p"`), auth("k2"))
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
	})

	t.Run("health and metrics need no key", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			r := do(t, http.MethodGet, n.URL()+path, nil, nil)
			assert.Equal(t, http.StatusOK, r.Status, "%s: %s", path, r.Raw)
		}
	})

	t.Run("WebSocket attach with the key in the header", func(t *testing.T) {
		c, welcome := attach(t, n, "ws-header", url.Values{"session_id": {"wss"}}, http.Header{"Authorization": {"Bearer k1"}})
		assert.Equal(t, "ws-header", welcome["participant_id"])
		r := postJSON(t, n.URL()+apiEventsPath, apiEv("session_id", `"wss"`, "message", `"authed"`), auth("k2"))
		require.Equal(t, http.StatusOK, r.Status, "answer: %s", r.Raw)
		_, inner := apiNextEvent(t, c, 1)
		assert.Equal(t, "authed", inner["message"])
	})

	t.Run("WebSocket attach with access_token in the query", func(t *testing.T) {
		for _, key := range []string{"k1", "k2"} {
			_, welcome := attach(t, n, "ws-query-"+key, url.Values{"access_token": {key}}, nil)
			assert.Equal(t, "ws-query-"+key, welcome["participant_id"])
		}
	})

	t.Run("WebSocket attach without a valid key is refused with 401", func(t *testing.T) {
		for name, tc := range map[string]struct {
			query  url.Values
			header http.Header
		}{
			"no key":             {},
			"wrong access_token": {query: url.Values{"access_token": {"k3"}}},
			"wrong header":       {header: http.Header{"Authorization": {"Bearer k3"}}},
			"empty access_token": {query: url.Values{"access_token": {""}}},
		} {
			c, resp, err := dial(n, "ws-refused", tc.query, tc.header)
			if resp != nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			if c != nil {
				_ = c.CloseNow()
			}
			require.Error(t, err, name)
			require.NotNil(t, resp, "%s: %v", name, err)
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, name)
		}
	})
}

func TestAPIInsecureListenIsRefused(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			n, err := New(Config{Listen: listen, Logger: testLogger()})
			require.ErrorIs(t, err, ErrInsecureListen)
			assert.Nil(t, n)
			assert.Contains(t, err.Error(), "--api-key")
			assert.Contains(t, err.Error(), "--insecure")
		})
	}

	allowed := []struct {
		name string
		cfg  Config
	}{
		{"insecure on every interface", Config{Listen: "0.0.0.0:0", Insecure: true}},
		{"key on an empty host", Config{Listen: ":0", APIKeys: []string{"k"}}},
	}
	for _, tc := range allowed {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = testLogger()
			n, err := New(tc.cfg)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, n.Shutdown(ctx))
		})
	}

	for _, listen := range []string{"localhost:0", "127.0.0.2:0"} {
		t.Run(listen+" serves without keys", func(t *testing.T) {
			n := startNode(t, Config{Listen: listen})
			r := do(t, http.MethodGet, n.URL()+"/healthz", nil, nil)
			assert.Equal(t, http.StatusOK, r.Status)
			r = do(t, http.MethodGet, n.URL()+"/v1/gateway/members", nil, nil)
			assert.Equal(t, http.StatusOK, r.Status, "without keys there is no authentication: %s", r.Raw)
		})
	}
}

func TestAPIUnknownEndpointsAndMethods(t *testing.T) {
	n := startNode(t, Config{})
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/v1/gateway/nope", http.StatusNotFound, "not_found"},
		{http.MethodPost, "/v1/gateway/event", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/v1/gateway/sessions/s/participants", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/v1/gateway/events", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPut, "/v1/gateway/deliveries", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/v1/gateway/sessions/s", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodGet, "/v1/gateway/sessions/s/participants/p", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/v1/gateway/members", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/readyz", http.StatusMethodNotAllowed, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			apiRequireError(t, do(t, tc.method, n.URL()+tc.path, nil, nil), tc.status, tc.code, "")
		})
	}
}

func TestConfigRefusesACoalesceWindowOrBatchSizeOutOfRange(t *testing.T) {
	for _, w := range []time.Duration{-time.Millisecond, MaxCoalesceWindow + time.Millisecond} {
		n, err := New(Config{Listen: "127.0.0.1:0", CoalesceWindow: w, Logger: testLogger()})
		require.ErrorContains(t, err, "--coalesce-window", "window %v", w)
		assert.Nil(t, n)
	}
	for _, size := range []int{-1, MaxMaxBatchBytes + 1} {
		n, err := New(Config{Listen: "127.0.0.1:0", MaxBatchBytes: size, Logger: testLogger()})
		require.ErrorContains(t, err, "--max-batch-bytes", "size %d", size)
		assert.Nil(t, n)
	}
}
