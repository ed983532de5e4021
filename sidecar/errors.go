package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
)

// Error is an answer that is not 200: the HTTP status and the error body of
// SPEC section 2. Handlers and the core return it; writeError renders it.
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
	// mailbox_budget_exhausted). writeError sends it as the Retry-After
	// header; the body carries it too, for WebSocket frames.
	RetryAfter int `json:"retry_after,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Field, e.Detail)
	}
	return e.Code + ": " + e.Detail
}

func newError(status int, code, field, detail string) *Error {
	return &Error{Status: status, Code: code, Field: field, Detail: detail}
}

func fieldError(code, field, detail string) *Error {
	return newError(http.StatusUnprocessableEntity, code, field, detail)
}

// Error codes used by more than one path.
const (
	codeInvalidJSON       = "invalid_json"
	codeRecipientNotFound = "recipient_not_found"
	codeMissingField      = "missing_field"
	codeInvalidField      = "invalid_field"
)

// mailboxBudgetRetry is the Retry-After of errMailboxBudget: room comes
// back as recipients read and acknowledge, or as events expire.
const mailboxBudgetRetry = 5 // seconds

// errMailboxBudget answers an event that this node has no room to hold:
// its mailboxes hold --max-mailbox-bytes. Nothing was delivered, here or
// elsewhere; what was accepted before stays.
var errMailboxBudget = &Error{Status: http.StatusServiceUnavailable, Code: "mailbox_budget_exhausted",
	RetryAfter: mailboxBudgetRetry,
	Detail: "this node's mailboxes are full (--max-mailbox-bytes) until their recipients read or their events expire; " +
		"nothing was delivered: retry after Retry-After with the same event_id"}

var errNoRecipient = newError(http.StatusNotFound, codeRecipientNotFound, "",
	"no participant to deliver to: the session has no other participant, or the recipient is unknown")

// errorBody is the JSON body of an error answer.
func errorBody(e *Error) []byte {
	b, err := json.Marshal(struct {
		Status string `json:"status"`
		*Error
	}{"error", e})
	if err != nil { // cannot happen: strings, an int and a string slice
		panic(err)
	}
	return b
}

// asError turns any error into an *Error, hiding the text of unexpected ones.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return newError(http.StatusInternalServerError, "internal", "", "the node failed to handle the request; it has been logged")
}

// logIfUnexpected logs err with its cause, and attrs, when it is not an
// *Error: a failure nobody expected, which the client gets as a 500
// "internal" that says it has been logged (asError).
func logIfUnexpected(ctx context.Context, log *slog.Logger, err error, attrs ...any) {
	var known *Error
	if errors.As(err, &known) {
		return
	}
	log.Error("a request failed unexpectedly", append(append(traceAttrs(ctx, ""), attrs...), "err", err)...)
}

// writeError writes err as the JSON error body with its status.
func writeError(w http.ResponseWriter, err error) {
	e := asError(err)
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, errorBody(e))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
