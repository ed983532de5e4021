package wire

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard-gw/switchyard/internal/ident"
	"github.com/switchyard-gw/switchyard/internal/jsonw"
)

// Event is a GatewayEvent (SPEC section 2) after validation. Its JSON form is
// what recipients see inside an event frame and what peers receive.
type Event struct {
	SenderID         string                     `json:"sender_id"`
	SenderType       string                     `json:"sender_type"`
	EventType        string                     `json:"event_type"`
	Message          string                     `json:"message,omitempty"`
	SessionID        string                     `json:"session_id,omitempty"`
	SenderGatewayURL string                     `json:"sender_gateway_url,omitempty"`
	Metadata         map[string]json.RawMessage `json:"metadata,omitempty"`
	RecipientID      string                     `json:"recipient_id,omitempty"`
	EventID          string                     `json:"event_id,omitempty"`
}

// DecodedEvent is an event as decoded: pointers tell absent fields from empty
// ones. Unknown fields are ignored and so never forwarded.
type DecodedEvent struct {
	SenderID         *string                    `json:"sender_id"`
	SenderType       *string                    `json:"sender_type"`
	EventType        *string                    `json:"event_type"`
	Message          *string                    `json:"message"`
	SessionID        *string                    `json:"session_id"`
	SenderGatewayURL *string                    `json:"sender_gateway_url"`
	Metadata         map[string]json.RawMessage `json:"metadata"`
	RecipientID      *string                    `json:"recipient_id"`
	EventID          *string                    `json:"event_id"`

	// values holds the strings DecodeEvent points the fields at, so that a
	// decoded field costs no allocation beyond its text. So a DecodedEvent is
	// decoded into once and not copied: a copy's fields point at the
	// original's values.
	values [8]string
}

// DecodeEvent vets and decodes an event body in one pass, into w: the
// submit path's decoder. It answers what CheckJSON followed by json.Unmarshal
// into a DecodedEvent answers (FuzzEventDecoding holds the two to it), with one
// difference: field names match exactly, where encoding/json would also take
// "Sender_ID" for sender_id. SPEC's field names are fixed, so a differently
// cased name is an unknown field, ignored like any other.
func DecodeEvent(data []byte, w *DecodedEvent) *Error {
	return decodeTopLevel(data, w)
}

// decodeTopLevel vets data and hands each top-level field to into; the
// first field of the wrong JSON type is reported after the body's syntax.
func decodeTopLevel(data []byte, into topLevelFields) *Error {
	s := jsonChecker{data: data, fields: into}
	if err := s.check(); err != nil {
		return err
	}
	return s.typeErr
}

// decodeField decodes one top-level field of an event, already checked.
func (w *DecodedEvent) decodeField(s *jsonChecker, key, raw []byte) {
	if string(key) == "metadata" {
		switch raw[0] {
		case 'n':
			w.Metadata = nil
		case '{':
			w.Metadata = decodeMetadata(raw)
		default:
			s.wrongType("metadata", "object")
		}
		return
	}
	var field **string
	var slot int
	switch string(key) {
	case "sender_id":
		field, slot = &w.SenderID, 0
	case "sender_type":
		field, slot = &w.SenderType, 1
	case "event_type":
		field, slot = &w.EventType, 2
	case "message":
		field, slot = &w.Message, 3
	case "session_id":
		field, slot = &w.SessionID, 4
	case "sender_gateway_url":
		field, slot = &w.SenderGatewayURL, 5
	case "recipient_id":
		field, slot = &w.RecipientID, 6
	case "event_id":
		field, slot = &w.EventID, 7
	default:
		return // unknown fields are ignored
	}
	s.decodeString(key, raw, field, &w.values[slot])
}

// decodeString sets *field to the checked JSON string raw, stored in
// *value; null clears it, and any other type is a type error.
func (s *jsonChecker) decodeString(key, raw []byte, field **string, value *string) {
	switch raw[0] {
	case 'n':
		*field = nil
	case '"':
		*value, _ = unquote(raw) // checked already: cannot fail
		*field = value
	default:
		s.wrongType(string(key), "string")
	}
}

// decodeMetadata splits a checked JSON object into its keys and a copy of
// each value's text, as encoding/json does for a map of json.RawMessage.
func decodeMetadata(raw []byte) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage)
	s := jsonChecker{data: raw, pos: 1} // past '{'
	for {
		s.space()
		if s.data[s.pos] == '}' {
			return m
		}
		key, _ := s.key()
		s.space()
		s.pos++ // ':'
		s.space()
		start := s.pos
		_ = s.value()
		m[string(key)] = append(json.RawMessage(nil), s.data[start:s.pos]...)
		s.space()
		if s.data[s.pos] == ',' {
			s.pos++
		}
	}
}

func (s *jsonChecker) wrongType(field, jsonType string) {
	if s.typeErr == nil {
		s.typeErr = FieldError("invalid_type", field, "must be of JSON type "+jsonType)
	}
}

// Limits are the size rules that validation enforces.
type Limits struct {
	MaxMessageBytes int // default 256 KiB
	MaxMetadataKeys int // default 50
}

// DecodeJSON vets data with CheckJSON and decodes it into v, naming the
// field of a type mismatch.
func DecodeJSON(data []byte, v any) *Error {
	if err := CheckJSON(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return FieldError("invalid_type", te.Field, "must be of JSON type "+jsonTypeName(te.Type.Kind().String()))
		}
		return NewError(400, CodeInvalidJSON, "", "the body could not be decoded: "+err.Error())
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "map", "struct":
		return "object"
	case "slice":
		return "array"
	case "ptr":
		return "string"
	}
	return kind
}

// validate checks w against SPEC's field table and returns the event.
// prefix is prepended to field names ("event." inside a delivery).
func (w *DecodedEvent) Validate(prefix string, lim Limits) (Event, *Error) {
	var ev Event
	var err *Error
	required := func(p *string, name string, max int) string {
		if err != nil {
			return ""
		}
		if p == nil {
			err = FieldError(CodeMissingField, prefix+name, name+" is required")
			return ""
		}
		err = CheckID(*p, prefix+name, max)
		return *p
	}
	optional := func(p *string, name string, max int) string {
		if err != nil || p == nil {
			return ""
		}
		err = CheckID(*p, prefix+name, max)
		return *p
	}
	ev.SenderID = required(w.SenderID, "sender_id", ident.MaxParticipantID)
	ev.SenderType = required(w.SenderType, "sender_type", 16)
	if err == nil && ev.SenderType != "human" && ev.SenderType != "ai" {
		err = FieldError(CodeInvalidField, prefix+"sender_type", `sender_type must be "human" or "ai"`)
	}
	ev.EventType = required(w.EventType, "event_type", ident.MaxEventType)
	ev.SessionID = optional(w.SessionID, "session_id", ident.MaxSessionID)
	ev.RecipientID = optional(w.RecipientID, "recipient_id", ident.MaxParticipantID)
	ev.EventID = optional(w.EventID, "event_id", ident.MaxEventID)
	if err != nil {
		return ev, err
	}
	if w.Message != nil {
		if len(*w.Message) > lim.MaxMessageBytes {
			return ev, FieldError("message_too_large", prefix+"message",
				"message is larger than the limit of "+itoa(lim.MaxMessageBytes)+" bytes")
		}
		ev.Message = *w.Message
	}
	if w.SenderGatewayURL != nil {
		if e := CheckGatewayURL(*w.SenderGatewayURL, prefix+"sender_gateway_url"); e != nil {
			return ev, e
		}
		ev.SenderGatewayURL = *w.SenderGatewayURL
	}
	if len(w.Metadata) > lim.MaxMetadataKeys {
		return ev, FieldError("too_many_keys", prefix+"metadata",
			"metadata has more than "+itoa(lim.MaxMetadataKeys)+" keys")
	}
	for k := range w.Metadata {
		if k == "" || len(k) > ident.MaxMetadataKey {
			return ev, FieldError(CodeInvalidField, prefix+"metadata",
				"metadata keys must be 1 to "+itoa(ident.MaxMetadataKey)+" bytes")
		}
	}
	ev.Metadata = w.Metadata
	return ev, nil
}

// AppendJSON appends ev's JSON form, byte for byte what json.Marshal(ev)
// gives (FuzzEventDecoding and TestEventAppendJSON compare them), without
// reflection: submits encode every event once. It fails only on metadata
// that is not JSON.
func (ev *Event) AppendJSON(dst []byte) ([]byte, error) {
	field := func(name, v string, omitEmpty bool) {
		if v == "" && omitEmpty {
			return
		}
		dst = append(dst, ',', '"')
		dst = append(dst, name...)
		dst = append(dst, '"', ':')
		dst = jsonw.AppendString(dst, v)
	}
	dst = append(dst, `{"sender_id":`...)
	dst = jsonw.AppendString(dst, ev.SenderID)
	field("sender_type", ev.SenderType, false)
	field("event_type", ev.EventType, false)
	field("message", ev.Message, true)
	field("session_id", ev.SessionID, true)
	field("sender_gateway_url", ev.SenderGatewayURL, true)
	if len(ev.Metadata) > 0 {
		var err error
		if dst, err = appendMetadata(append(dst, `,"metadata":`...), ev.Metadata); err != nil {
			return nil, err
		}
	}
	field("recipient_id", ev.RecipientID, true)
	field("event_id", ev.EventID, true)
	return append(dst, '}'), nil
}

// appendMetadata writes metadata as encoding/json writes the map: keys in
// byte order, each value compacted (jsonw.AppendCompact). A value that is
// not JSON fails, as it does there.
func appendMetadata(dst []byte, m map[string]json.RawMessage) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		v := m[k]
		if v == nil {
			v = json.RawMessage("null") // what json.RawMessage's MarshalJSON says for nil
		}
		if !json.Valid(v) {
			return nil, fmt.Errorf("metadata %q is not JSON", k)
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(jsonw.AppendString(dst, k), ':')
		dst = jsonw.AppendCompact(dst, v)
	}
	return append(dst, '}'), nil
}

// CheckID applies the identifier rules to a field.
func CheckID(v, field string, max int) *Error {
	if problem := ident.Problem(v, max); problem != "" {
		detail := field + " " + problem
		if problem == "is longer than the limit" {
			detail = field + " is longer than " + itoa(max) + " bytes"
		}
		return FieldError(CodeInvalidField, field, detail)
	}
	return nil
}

// CheckGatewayURL accepts an absolute http(s) base URL without credentials.
func CheckGatewayURL(raw, field string) *Error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return FieldError("invalid_url", field, field+" must be an absolute http or https URL")
	case u.User != nil:
		return FieldError("invalid_url", field, field+" must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return FieldError("invalid_url", field, field+" must be a base URL without query or fragment")
	case DotSegments(u.Path):
		return FieldError("invalid_url", field, field+` must not have "." or ".." path segments (encoded or not) or backslashes`)
	}
	return nil
}

// NewEventID makes a server-assigned event id.
func NewEventID() string { return "evt_" + strings.ToLower(rand.Text()) }

func itoa(n int) string { return strconv.Itoa(n) }

// DotSegments reports whether a decoded URL path has a segment that some
// server may resolve as "." or "..": the segment itself, its further
// percent-decodings ("%2e" once decoded from "%252e"), with a ";params"
// suffix ("..;" in Java servers), or any backslash (a separator to some).
func DotSegments(p string) bool {
	if strings.Contains(p, "\\") {
		return true
	}
	for _, seg := range strings.Split(p, "/") {
		for range 3 { // decode up to three more times
			name, _, _ := strings.Cut(seg, ";")
			if name == "." || name == ".." {
				return true
			}
			dec, err := url.PathUnescape(seg)
			if err != nil || dec == seg {
				break
			}
			if strings.ContainsAny(dec, "/\\") {
				return true // an encoded separator inside a segment
			}
			seg = dec
		}
	}
	return false
}
