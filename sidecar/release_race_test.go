package sidecar

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/ws"
)

// TestARetriedReleaseBetweenExportAndHoldGetsTheHeldState: node 2 asks
// node 1 to release bob, and asks again (a retry) while node 1 is between
// exporting bob and holding his state. The retry must get that same state,
// not a 404 (bob gone and nothing held yet), on which node 2 would start
// bob afresh and lose his mailbox. Node 1 is stopped between the two steps
// of the first release until the retry has either been answered (the race
// lost) or is waiting for the first to finish.
func TestARetriedReleaseBetweenExportAndHoldGetsTheHeldState(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	require.NoError(t, nodes[0].gw.join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], 3)

	exported, proceed := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	pause := func(string) {
		if once.CompareAndSwap(false, true) {
			close(exported)
			<-proceed
		}
	}
	nodes[0].gw.held.exported.Store(&pause)

	type answer struct {
		st     *ws.ParticipantState
		status int
		err    error
	}
	release := func(out chan<- answer) {
		st, status, err := nodes[1].gw.release(t.Context(), nodes[0].Name(), "bob")
		out <- answer{st, status, err}
	}
	firstAnswer, retryAnswer := make(chan answer, 1), make(chan answer, 1)
	go release(firstAnswer)
	select {
	case <-exported:
	case <-time.After(10 * time.Second):
		t.Fatal("the first release never exported bob")
	}
	go release(retryAnswer)

	var retry answer
	answered := false
	require.Eventually(t, func() bool {
		select {
		case retry = <-retryAnswer:
			answered = true
			return true
		default:
			return nodes[0].gw.held.releasing.users("bob") >= 2
		}
	}, 10*time.Second, time.Millisecond, "the retry is neither answered nor waiting")
	close(proceed)
	first := <-firstAnswer
	if !answered {
		retry = <-retryAnswer
	}

	require.NoError(t, first.err)
	require.NotNil(t, first.st, "status %d", first.status)
	require.NoError(t, retry.err)
	require.Equal(t, http.StatusOK, retry.status, "the retry must get the state held for node 2, not lose bob")
	assert.Equal(t, first.st, retry.st, "the same state, mailbox and seq counter")
	assert.Len(t, retry.st.Events, 3)
	assert.Zero(t, nodes[0].gw.held.releasing.users("bob"), "the lock is dropped once unused")
}
