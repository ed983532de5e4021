package sidecar

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
)

// peerAnswering is an HTTP transport to one loopback peer, "peer", whose
// every answer is 200 with body.
func peerAnswering(t *testing.T, stateLimit int64, body string) *httpPeers {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	client := newPeerClient(time.Second, nil)
	t.Cleanup(client.close)
	return &httpPeers{client: client, cluster: membership.NewLocal("peer", srv.URL), stateLimit: stateLimit}
}

// TestHTTPPeersReadEachAnswerUpToItsOwnLimit: a release's answer may be as
// large as the hand-off limit, and no larger; a delivery's answer of the
// same size is past its own, smaller, limit. Neither is truncated.
func TestHTTPPeersReadEachAnswerUpToItsOwnLimit(t *testing.T) {
	state := `{"participant_id":"bob","participant_type":"ai","sessions":["` + strings.Repeat("s", 2<<20) + `"]}`
	ref := routing.ParticipantRef{ParticipantID: "bob", From: "self"}

	fits := peerAnswering(t, int64(len(state)), state)
	rep, err := fits.Release(t.Context(), "peer", ref)
	require.NoError(t, err)
	require.NotNil(t, rep.State)
	assert.Equal(t, "bob", rep.State.ID)

	_, err = fits.Deliver(t.Context(), "peer", routing.PeerDelivery{RecipientIDs: []string{"bob"}}, 1)
	require.ErrorIs(t, err, routing.ErrAnswerTooLarge, "2 MiB is past a delivery answer's limit")

	tooLarge := peerAnswering(t, int64(len(state))-1, state)
	_, err = tooLarge.Release(t.Context(), "peer", ref)
	require.ErrorIs(t, err, routing.ErrAnswerTooLarge)
}

// TestHTTPPeersNameNoMember: a node the cluster does not know is
// ErrNotMember, without a request.
func TestHTTPPeersNameNoMember(t *testing.T) {
	h := peerAnswering(t, 1<<20, `{"status":"ok"}`)
	_, err := h.Release(t.Context(), "stranger", routing.ParticipantRef{ParticipantID: "bob"})
	require.ErrorIs(t, err, routing.ErrNotMember)
	_, err = h.Takeover(t.Context(), "stranger", routing.ParticipantRef{ParticipantID: "bob"})
	require.ErrorIs(t, err, routing.ErrNotMember)
}
