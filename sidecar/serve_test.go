package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// errLog keeps the message and the err attribute of every record logged.
type errLog struct {
	mu      sync.Mutex
	records []string
}

func (l *errLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *errLog) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			line += ": " + a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, line)
	l.mu.Unlock()
	return nil
}
func (l *errLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errLog) WithGroup(string) slog.Handler      { return l }

func (l *errLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.records...)
}

// TestUnexpectedErrorsAreLoggedWithTheirCause: a handler failure that is
// not an *Error answers a 500 that hides it, and the node logs its cause;
// an expected *Error (a 404, say) is answered and not logged as a failure.
func TestUnexpectedErrorsAreLoggedWithTheirCause(t *testing.T) {
	logs := &errLog{}
	n := startNode(t, Config{Logger: slog.New(logs)})

	rec := httptest.NewRecorder()
	n.serve(func(http.ResponseWriter, *http.Request) error {
		return errors.New("reading the disk: on fire")
	})(rec, httptest.NewRequest(http.MethodGet, "/v1/gateway/anything", nil))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.NotContains(t, rec.Body.String(), "on fire", "the cause stays in the log")
	assert.Contains(t, logs.lines(), "a request failed unexpectedly: reading the disk: on fire")

	rec = httptest.NewRecorder()
	n.serve(func(http.ResponseWriter, *http.Request) error { return routing.ErrNoRecipient })(rec,
		httptest.NewRequest(http.MethodGet, "/v1/gateway/anything", nil))
	require.Equal(t, http.StatusNotFound, rec.Code)
	assert.Equal(t, 1, countPrefixed(logs.lines(), "a request failed unexpectedly"),
		"an expected answer is not logged as a failure: %q", logs.lines())
}

// TestAPanickingHandlerAnswers500AndIsLogged: a panic in a handler is
// answered like an unexpected error (500 "internal", the cause hidden) and
// logged with its cause, instead of a connection dropped without an answer.
func TestAPanickingHandlerAnswers500AndIsLogged(t *testing.T) {
	logs := &errLog{}
	n := startNode(t, Config{Logger: slog.New(logs)})

	rec := httptest.NewRecorder()
	n.serve(func(http.ResponseWriter, *http.Request) error {
		panic("index out of range: on fire")
	})(rec, httptest.NewRequest(http.MethodGet, "/v1/gateway/anything", nil))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.Contains(t, rec.Body.String(), `"internal"`)
	assert.NotContains(t, rec.Body.String(), "on fire", "the cause stays in the log")
	assert.Contains(t, logs.lines(), "a request failed unexpectedly: panic: index out of range: on fire")

	assert.PanicsWithValue(t, http.ErrAbortHandler, func() {
		n.serve(func(http.ResponseWriter, *http.Request) error { panic(http.ErrAbortHandler) })(
			httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/gateway/anything", nil))
	}, "net/http's deliberate abort goes on up")
}

// TestUnexpectedFrameErrorsAreLoggedWithTheirCause: a WebSocket frame
// (submit, join, leave) that fails unexpectedly is answered like its REST
// twin, a 500 that hides the cause and says it has been logged, and the
// node logs it with its cause; an expected failure is not logged.
func TestUnexpectedFrameErrorsAreLoggedWithTheirCause(t *testing.T) {
	logs := &errLog{}
	n := startNode(t, Config{Logger: slog.New(logs)})
	bob := ws.Identity{ParticipantID: "bob", ParticipantType: "ai"}

	reply := n.backend.replyError(t.Context(), bob, "join", errors.New("reading the disk: on fire"))
	require.Equal(t, http.StatusInternalServerError, reply.Status)
	assert.Equal(t, "internal", reply.Code)
	assert.NotContains(t, string(reply.Body), "on fire", "the cause stays in the log")
	assert.Contains(t, reply.Detail, "it has been logged")
	assert.Contains(t, logs.lines(), "a request failed unexpectedly: reading the disk: on fire")

	reply = n.backend.replyError(t.Context(), bob, "submit", routing.ErrNoRecipient)
	require.Equal(t, http.StatusNotFound, reply.Status)
	assert.Equal(t, 1, countPrefixed(logs.lines(), "a request failed unexpectedly"),
		"an expected answer is not logged as a failure: %q", logs.lines())
}

func countPrefixed(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
