package sidecar

import (
	"context"
	"errors"
	"log/slog"

	"github.com/switchyard-gw/switchyard/internal/wire"
)

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
