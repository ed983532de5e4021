// Package ident checks the identifiers that name participants, sessions and
// events: the one rule set (length in bytes, valid UTF-8, no control
// characters) that the REST API and the WebSocket frames share.
package ident
