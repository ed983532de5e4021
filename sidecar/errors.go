package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/switchyard-gw/switchyard/internal/wire"
)

// The core's own errors and the log of unexpected ones; the error model
// itself (wire.Error and its body) is package wire's.

// mailboxBudgetRetry is the Retry-After of errMailboxBudget: room comes
// back as recipients read and acknowledge, or as events expire.
const mailboxBudgetRetry = 5 // seconds

// errMailboxBudget answers an event that this node has no room to hold:
// its mailboxes hold --max-mailbox-bytes. Nothing was delivered, here or
// elsewhere; what was accepted before stays.
var errMailboxBudget = &wire.Error{Status: http.StatusServiceUnavailable, Code: "mailbox_budget_exhausted",
	RetryAfter: mailboxBudgetRetry,
	Detail: "this node's mailboxes are full (--max-mailbox-bytes) until their recipients read or their events expire; " +
		"nothing was delivered: retry after Retry-After with the same event_id"}

var errNoRecipient = wire.NewError(http.StatusNotFound, wire.CodeRecipientNotFound, "",
	"no participant to deliver to: the session has no other participant, or the recipient is unknown")

// logIfUnexpected logs err with its cause, and attrs, when it is not an
// *Error: a failure nobody expected, which the client gets as a 500
// "internal" that says it has been logged (AsError).
func logIfUnexpected(ctx context.Context, log *slog.Logger, err error, attrs ...any) {
	var known *wire.Error
	if errors.As(err, &known) {
		return
	}
	log.Error("a request failed unexpectedly", append(append(wire.TraceAttrs(ctx, ""), attrs...), "err", err)...)
}
