package wire

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// W3C trace context and the request as logs name it. A submit carries a
// traceparent (the client's, or a new one) through the peer hop to the
// delivered frame's envelope, so one event can be followed across nodes;
// every request has an id (the binding gives it one), written in the
// node's logs.

type traceKey struct{}
type requestKey struct{}

// Request is the request being served as logs name it. The binding keeps
// what it learns about a request in one context value (each value costs a
// copy of the request) that implements Request, so that the core can name
// the request in its logs.
type Request interface {
	RequestID() string
}

// WithRequest puts r in ctx; RequestFrom gets it back (nil: none).
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// RequestFrom is the request WithRequest put in ctx, or nil.
func RequestFrom(ctx context.Context) Request {
	r, _ := ctx.Value(requestKey{}).(Request)
	return r
}

// WithTraceparent puts tp in ctx: the trace a request belongs to.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, traceKey{}, tp)
}

// TraceparentFrom is the request's traceparent, or "".
func TraceparentFrom(ctx context.Context) string {
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

// NewTraceparent starts a trace (sampled): 16 random bytes of trace id and
// 8 of span id, hex-encoded in place.
func NewTraceparent() string {
	var random [24]byte
	_, _ = rand.Read(random[:])
	var tp [55]byte // "00-" + 32 + "-" + 16 + "-01"
	copy(tp[:], "00-")
	hex.Encode(tp[3:35], random[:16])
	tp[35] = '-'
	hex.Encode(tp[36:52], random[16:])
	copy(tp[52:], "-01")
	return string(tp[:])
}

// ChildTraceparent keeps the trace id and flags with a new span id: the
// next hop's span.
func ChildTraceparent(tp string) string {
	if !ValidTraceparent(tp) {
		return NewTraceparent()
	}
	return tp[:36] + RandomHex(8) + tp[52:]
}

// ValidTraceparent checks the version-00 shape: 00-<32 hex>-<16 hex>-<2 hex>,
// ids not all zero.
func ValidTraceparent(tp string) bool {
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	for _, part := range []string{tp[3:35], tp[36:52], tp[53:55]} {
		if _, err := hex.DecodeString(part); err != nil || strings.ToLower(part) != part {
			return false
		}
	}
	return strings.Trim(tp[3:35], "0") != "" && strings.Trim(tp[36:52], "0") != ""
}

// RandomHex is n random bytes in hex (on the stack up to 32 bytes, the
// sizes ids use).
func RandomHex(n int) string {
	if n > 32 {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	var random [32]byte
	var out [64]byte
	_, _ = rand.Read(random[:n])
	hex.Encode(out[:2*n], random[:n])
	return string(out[:2*n])
}

// TraceAttrs are the log attributes that tie a line to its request and trace.
func TraceAttrs(ctx context.Context, tp string) []any {
	attrs := []any{}
	if r := RequestFrom(ctx); r != nil && r.RequestID() != "" {
		attrs = append(attrs, "request_id", r.RequestID())
	}
	if tp != "" {
		attrs = append(attrs, "trace_id", tp[3:35])
	}
	return attrs
}
