package routing

import (
	"net/http"

	"github.com/switchyard-gw/switchyard/internal/wire"
)

// The core's own errors; the error model itself (wire.Error and its body)
// is package wire's.

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

var ErrNoRecipient = wire.NewError(http.StatusNotFound, wire.CodeRecipientNotFound, "",
	"no participant to deliver to: the session has no other participant, or the recipient is unknown")

// ErrGatewayNotAllowed answers a gateway URL that no --allow-gateway prefix
// (nor a cluster member's URL) admits.
func ErrGatewayNotAllowed(field string) *wire.Error {
	return wire.FieldError("gateway_url_not_allowed", field,
		field+" is not on this cluster's list of allowed gateways (--allow-gateway)")
}
