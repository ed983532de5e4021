package ident

import (
	"unicode"
	"unicode/utf8"
)

// Length limits of SPEC section 2, in bytes.
const (
	MaxParticipantID = 256
	MaxSessionID     = 256
	MaxEventID       = 128
	MaxEventType     = 128
	MaxMetadataKey   = 128
)

// Problem says what is wrong with an identifier, or "" when it is fine.
// The answer is a short phrase fit for an error detail ("is empty", ...).
func Problem(s string, max int) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > max:
		return "is longer than the limit"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "contains a control character"
		}
	}
	return ""
}
