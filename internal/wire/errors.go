package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Error is an answer that is not 200: the HTTP status and the error body of
// SPEC section 2. Handlers and the core return it; WriteError renders it.
type Error struct {
	Status int    `json:"-"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
	// Extra fields some answers carry (the 502 names the event and the
	// recipients that missed it).
	EventID string   `json:"event_id,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// RetryAfter, when set, is the whole seconds to wait before asking
	// again: a refusal for now (429 rate_limited, 503
	// mailbox_budget_exhausted). WriteError sends it as the Retry-After
	// header; the body carries it too, for WebSocket frames.
	RetryAfter int `json:"retry_after,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Field, e.Detail)
	}
	return e.Code + ": " + e.Detail
}

func NewError(status int, code, field, detail string) *Error {
	return &Error{Status: status, Code: code, Field: field, Detail: detail}
}

func FieldError(code, field, detail string) *Error {
	return NewError(http.StatusUnprocessableEntity, code, field, detail)
}

// Error codes used by more than one path.
const (
	CodeInvalidJSON       = "invalid_json"
	CodeRecipientNotFound = "recipient_not_found"
	CodeMissingField      = "missing_field"
	CodeInvalidField      = "invalid_field"
)

// ErrorBody is the JSON body of an error answer.
func ErrorBody(e *Error) []byte {
	b, err := json.Marshal(struct {
		Status string `json:"status"`
		*Error
	}{"error", e})
	if err != nil { // cannot happen: strings, an int and a string slice
		panic(err)
	}
	return b
}

// AsError turns any error into an *Error, hiding the text of unexpected ones.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return NewError(http.StatusInternalServerError, "internal", "", "the node failed to handle the request; it has been logged")
}

// WriteError writes err as the JSON error body with its status.
func WriteError(w http.ResponseWriter, err error) {
	e := AsError(err)
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	WriteJSON(w, e.Status, ErrorBody(e))
}

func WriteJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Truncate is an answer's text cut to 200 bytes, for a log line.
func Truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
