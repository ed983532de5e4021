package wire

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting in request bodies (metadata values included).
const maxJSONDepth = 32

// CheckJSON vets a request body before encoding/json decodes it, for what
// encoding/json lets through silently: duplicate keys (it keeps the last),
// invalid UTF-8 and lone surrogates (it substitutes U+FFFD), and extreme
// nesting. It also rejects anything but one JSON object. The error names the
// field at fault ("event.sender_id"; paths stop at "metadata").
func CheckJSON(data []byte) *Error {
	s := jsonChecker{data: data}
	return s.check()
}

// jsonChecker walks a body once. With fields set, it also hands each
// top-level field to it once checked (decodeTopLevel).
type jsonChecker struct {
	data   []byte
	pos    int
	depth  int
	path   [][]byte // keys from the root to the value being checked
	fields topLevelFields
	// typeErr is the first field of the wrong JSON type. Like
	// encoding/json, a body's syntax errors are reported before it.
	typeErr *Error
}

// topLevelFields decodes the top-level fields of a body the checker walks:
// key and the raw text of its value, checked already.
type topLevelFields interface {
	decodeField(s *jsonChecker, key, raw []byte)
}

func (s *jsonChecker) check() *Error {
	s.path = make([][]byte, 0, 4)
	s.space()
	if s.pos == len(s.data) {
		return NewError(http.StatusBadRequest, CodeInvalidJSON, "", "the body is empty; send a JSON object")
	}
	if s.data[s.pos] != '{' {
		return NewError(http.StatusBadRequest, CodeInvalidJSON, "", "the body must be a JSON object")
	}
	if err := s.value(); err != nil {
		return err
	}
	s.space()
	if s.pos != len(s.data) {
		return s.syntax("unexpected data after the JSON object")
	}
	return nil
}

func (s *jsonChecker) field() string {
	var b strings.Builder
	for i, p := range s.path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.Write(p)
		if string(p) == "metadata" {
			break
		}
	}
	return b.String()
}

func (s *jsonChecker) syntax(msg string) *Error {
	return NewError(http.StatusBadRequest, CodeInvalidJSON, "", "the body is not valid JSON: "+msg)
}

func (s *jsonChecker) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *jsonChecker) value() *Error {
	s.space()
	if s.pos == len(s.data) {
		return s.syntax("unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		_, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		return s.syntax("unexpected character " + quoteByte(c))
	}
}

func (s *jsonChecker) enter() *Error {
	s.depth++
	if s.depth > maxJSONDepth {
		return NewError(http.StatusBadRequest, CodeInvalidJSON, s.field(), "the body nests deeper than the limit")
	}
	return nil
}

// smallObjectKeys is how many keys an object's duplicate check compares
// pairwise before it switches to a map (a body of many keys must not cost
// quadratic time).
const smallObjectKeys = 16

func (s *jsonChecker) object() *Error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '{'
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	var few [smallObjectKeys][]byte
	keys := few[:0]
	var many map[string]struct{}
	for {
		s.space()
		if s.pos == len(s.data) || s.data[s.pos] != '"' {
			return s.syntax("expected a string key")
		}
		key, err := s.key()
		if err != nil {
			return err
		}
		duplicate := false
		if many == nil {
			for _, k := range keys {
				duplicate = duplicate || string(k) == string(key)
			}
			if keys = append(keys, key); len(keys) == smallObjectKeys {
				many = make(map[string]struct{}, 2*smallObjectKeys)
				for _, k := range keys {
					many[string(k)] = struct{}{}
				}
			}
		} else if _, duplicate = many[string(key)]; !duplicate {
			many[string(key)] = struct{}{}
		}
		if duplicate {
			s.path = append(s.path, key)
			return NewError(http.StatusBadRequest, "duplicate_key", s.field(), "the key "+Quote(string(key))+" appears twice in one object")
		}
		s.space()
		if s.pos == len(s.data) || s.data[s.pos] != ':' {
			return s.syntax("expected ':' after a key")
		}
		s.pos++
		s.path = append(s.path, key)
		s.space()
		start := s.pos
		if err := s.value(); err != nil {
			return err
		}
		if s.fields != nil && s.depth == 1 {
			s.fields.decodeField(s, key, s.data[start:s.pos])
		}
		s.path = s.path[:len(s.path)-1]
		s.space()
		if s.pos == len(s.data) {
			return s.syntax("unexpected end of input in an object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntax("expected ',' or '}' in an object")
		}
	}
}

func (s *jsonChecker) array() *Error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '['
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if err := s.value(); err != nil {
			return err
		}
		s.space()
		if s.pos == len(s.data) {
			return s.syntax("unexpected end of input in an array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntax("expected ',' or ']' in an array")
		}
	}
}

// str checks the string at s.pos and moves past it; escaped tells whether
// its raw bytes need decoding.
func (s *jsonChecker) str() (escaped bool, err *Error) {
	s.pos++ // opening quote
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return escaped, err
			}
		case c < 0x20:
			return escaped, s.syntax("control character in a string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				return escaped, s.badText()
			}
			s.pos += size
		}
	}
	return escaped, s.syntax("unterminated string")
}

// key checks the object key at s.pos and returns it decoded: a slice of
// the body unless it had escapes.
func (s *jsonChecker) key() ([]byte, *Error) {
	start := s.pos
	escaped, err := s.str()
	if err != nil {
		return nil, err
	}
	raw := s.data[start:s.pos]
	if !escaped {
		return raw[1 : len(raw)-1], nil
	}
	v, ok := unquote(raw)
	if !ok {
		return nil, s.syntax("bad string escape")
	}
	return []byte(v), nil
}

// unquote decodes a checked JSON string (quotes included).
func unquote(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var v string
	return v, json.Unmarshal(raw, &v) == nil
}

func (s *jsonChecker) badText() *Error {
	return FieldError("invalid_utf8", s.field(), "the text is not valid UTF-8")
}

// escape checks the escape sequence at s.pos; a \u escape of a surrogate
// must be a proper pair.
func (s *jsonChecker) escape() *Error {
	if s.pos+1 >= len(s.data) {
		return s.syntax("unterminated escape")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
		r, ok := s.hex4(s.pos + 2)
		if !ok {
			return s.syntax("bad \\u escape")
		}
		s.pos += 6
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return s.badText() // a low surrogate alone
		case r >= 0xD800 && r <= 0xDBFF:
			if s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
				if lo, ok := s.hex4(s.pos + 2); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					s.pos += 6
					return nil
				}
			}
			return s.badText() // a high surrogate without its pair
		}
		return nil
	default:
		return s.syntax("bad escape")
	}
}

func (s *jsonChecker) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

func (s *jsonChecker) literal(word string) *Error {
	if !strings.HasPrefix(string(s.data[s.pos:min(len(s.data), s.pos+len(word))]), word) {
		return s.syntax("unexpected literal")
	}
	s.pos += len(word)
	return nil
}

func (s *jsonChecker) number() *Error {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.pos < len(s.data) && s.data[s.pos] == '0' {
		s.pos++
	} else if digits() == 0 {
		return s.syntax("bad number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if digits() == 0 {
			return s.syntax("bad number")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return s.syntax("bad number")
		}
	}
	if s.pos == start {
		return s.syntax("bad number")
	}
	return nil
}

func quoteByte(c byte) string {
	b, _ := json.Marshal(string([]byte{c}))
	return string(b)
}

// Quote is s as a JSON string, cut at 64 bytes: a value named in an
// error's detail.
func Quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}
