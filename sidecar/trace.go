package sidecar

import (
	"context"
	"net/http"

	"github.com/switchyard-gw/switchyard/internal/wire"
)

// Request ids and W3C trace context at the HTTP edge. Every request gets an
// id (the client's X-Request-Id when it sends a sane one), echoed in the
// answer and written in the node's logs; a client's traceparent is kept
// (package wire carries it on, through the peer hop).

const (
	requestIDHeader   = "X-Request-Id"
	traceparentHeader = "traceparent"
)

// requestInfo is what the middleware learns about a request, in one context
// value (each value costs a copy of the request): its id, set by
// withRequestID, and its credential (credNone until authenticate fills it
// in place, before any handler runs).
type requestInfo struct {
	id   string
	cred Credential
}

// RequestID names the request in the core's logs (wire.TraceAttrs).
func (i *requestInfo) RequestID() string { return i.id }

// withRequestID gives every request an id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !saneID(id) {
			id = wire.RandomHex(8)
		}
		w.Header().Set(requestIDHeader, id)
		ctx := wire.WithRequest(r.Context(), &requestInfo{id: id, cred: Credential{Kind: credNone}})
		if tp := r.Header.Get(traceparentHeader); wire.ValidTraceparent(tp) {
			ctx = wire.WithTraceparent(ctx, tp)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func requestInfoFrom(ctx context.Context) *requestInfo {
	info, _ := wire.RequestFrom(ctx).(*requestInfo)
	return info
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
