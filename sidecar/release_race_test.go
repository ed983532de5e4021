package sidecar

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// A release on an old home exports the participant, then holds its state
// for the new home. These tests stop node 1 between the two steps of a
// release of bob asked by node 2, send a second request about bob, and let
// the release go on once that request has either been answered (it ran
// between the two steps: the race the lock prevents) or is waiting for the
// release to finish. They fail every run without the lock.

// releaseRace is a cluster of two with bob homed on node 1, 3 events
// queued for him, and a release of bob by node 2 stopped on node 1 between
// its export and its hold.
type releaseRace struct {
	nodes   []*Node
	first   chan releaseAnswer
	proceed chan struct{}
}

type releaseAnswer struct {
	st     *ws.ParticipantState
	status int
	err    error
}

func startReleaseRace(t *testing.T) *releaseRace {
	nodes := startCluster(t, 2, Config{})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], 3)

	r := &releaseRace{nodes: nodes, first: make(chan releaseAnswer, 1), proceed: make(chan struct{})}
	exported := make(chan struct{})
	var once atomic.Bool
	pause := func(string) {
		if once.CompareAndSwap(false, true) {
			close(exported)
			<-r.proceed
		}
	}
	nodes[0].gw.OnExported(pause)
	go func() { r.first <- r.release(t) }()
	select {
	case <-exported:
	case <-time.After(10 * time.Second):
		t.Fatal("the first release never exported bob")
	}
	return r
}

// release asks node 1, from node 2, to release bob.
func (r *releaseRace) release(t *testing.T) releaseAnswer {
	st, status, err := r.nodes[1].gw.Release(t.Context(), r.nodes[0].Name(), "bob")
	return releaseAnswer{st, status, err}
}

// meanwhile runs second while the first release is stopped, lets the
// release go on once second was answered or waits for bob's lock, and
// returns both answers.
func meanwhile(t *testing.T, r *releaseRace, second func() releaseAnswer) (first, got releaseAnswer) {
	answer := make(chan releaseAnswer, 1)
	go func() { answer <- second() }()
	answered := false
	require.Eventually(t, func() bool {
		select {
		case got = <-answer:
			answered = true
			return true
		default:
			return r.nodes[0].gw.ReleasingUsers("bob") >= 2
		}
	}, 10*time.Second, time.Millisecond, "the second request is neither answered nor waiting")
	close(r.proceed)
	first = <-r.first
	if !answered {
		got = <-answer
	}
	require.NoError(t, first.err)
	require.NotNil(t, first.st, "status %d", first.status)
	return first, got
}

// TestARetriedReleaseBetweenExportAndHoldGetsTheHeldState: node 2 asks
// again (a retry) while node 1 is between exporting bob and holding his
// state. The retry must get that same state, not a 404 (bob gone and
// nothing held yet), on which node 2 would start bob afresh and lose his
// mailbox.
func TestARetriedReleaseBetweenExportAndHoldGetsTheHeldState(t *testing.T) {
	r := startReleaseRace(t)
	first, retry := meanwhile(t, r, func() releaseAnswer { return r.release(t) })

	require.NoError(t, retry.err)
	require.Equal(t, http.StatusOK, retry.status, "the retry must get the state held for node 2, not lose bob")
	assert.Equal(t, first.st, retry.st, "the same state, mailbox and seq counter")
	assert.Len(t, retry.st.Events, 3)
	assert.Zero(t, r.nodes[0].gw.ReleasingUsers("bob"), "the lock is dropped once unused")
}

// TestAGiveBackBetweenExportAndHoldRestoresTheHeldState: node 2 gives bob
// back (its release attempt was cut, and the release still runs on node 1)
// while node 1 is between exporting bob and holding his state. Node 1 must
// take him back with his mailbox, not answer 404 (nothing held yet), on
// which node 2 would start bob afresh.
func TestAGiveBackBetweenExportAndHoldRestoresTheHeldState(t *testing.T) {
	r := startReleaseRace(t)
	req := routing.RestoreRequest{ParticipantRef: routing.ParticipantRef{ParticipantID: "bob", From: r.nodes[1].Name()}}
	_, restore := meanwhile(t, r, func() releaseAnswer {
		status, err := r.nodes[1].gw.Peers().Restore(t.Context(), r.nodes[0].Name(), req)
		return releaseAnswer{status: status, err: err}
	})

	require.NoError(t, restore.err)
	require.Equal(t, http.StatusOK, restore.status, "node 1 must take bob back, not lose him")
	require.NotNil(t, r.nodes[0].hub.Lookup("bob"), "bob is back on node 1")
	assert.Zero(t, r.nodes[0].gw.HeldCount(), "the held state was restored")
	st, res := r.nodes[0].hub.Export("bob")
	require.Equal(t, ws.Exported, res)
	assert.Len(t, st.Events, 3, "with his mailbox")
}
