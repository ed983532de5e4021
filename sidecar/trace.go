package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// Request ids and W3C trace context. Every request gets an id (the
// client's X-Request-Id when it sends a sane one), echoed in the answer and
// written in the node's logs. A submit carries a traceparent (the client's,
// or a new one) through the peer hop to the delivered frame's envelope, so
// one event can be followed across nodes.

const (
	requestIDHeader   = "X-Request-Id"
	traceparentHeader = "traceparent"
)

type requestInfoKey struct{}
type traceKey struct{}

// requestInfo is what the middleware learns about a request, in one context
// value (each value costs a copy of the request): its id, set by
// withRequestID, and its credential (credNone until authenticate fills it
// in place, before any handler runs).
type requestInfo struct {
	id   string
	cred Credential
}

// withRequestID gives every request an id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !saneID(id) {
			id = randomHex(8)
		}
		w.Header().Set(requestIDHeader, id)
		ctx := context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{id: id, cred: Credential{Kind: credNone}})
		if tp := r.Header.Get(traceparentHeader); validTraceparent(tp) {
			ctx = context.WithValue(ctx, traceKey{}, tp)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func requestInfoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

func requestIDFrom(ctx context.Context) string {
	if info := requestInfoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

// traceparentFrom is the request's traceparent, or "".
func traceparentFrom(ctx context.Context) string {
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

// newTraceparent starts a trace (sampled): 16 random bytes of trace id and
// 8 of span id, hex-encoded in place.
func newTraceparent() string {
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

// childTraceparent keeps the trace id and flags with a new span id: the
// next hop's span.
func childTraceparent(tp string) string {
	if !validTraceparent(tp) {
		return newTraceparent()
	}
	return tp[:36] + randomHex(8) + tp[52:]
}

// validTraceparent checks the version-00 shape: 00-<32 hex>-<16 hex>-<2 hex>,
// ids not all zero.
func validTraceparent(tp string) bool {
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

func saneID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// randomHex is n random bytes in hex (on the stack up to 32 bytes, the
// sizes ids use).
func randomHex(n int) string {
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

// traceAttrs are the log attributes that tie a line to its request and trace.
func traceAttrs(ctx context.Context, tp string) []any {
	attrs := []any{}
	if id := requestIDFrom(ctx); id != "" {
		attrs = append(attrs, "request_id", id)
	}
	if tp != "" {
		attrs = append(attrs, "trace_id", tp[3:35])
	}
	return attrs
}
