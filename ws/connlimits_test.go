package ws

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConnectionsPerParticipantAreCapped: concurrent attaches of one
// participant past its cap are refused before the upgrade, exactly as many
// as are over it (the count is checked and taken under one lock), while
// another participant still attaches; a slot comes back when a connection
// goes, and the count's entry is gone once none is left.
func TestConnectionsPerParticipantAreCapped(t *testing.T) {
	const perParticipant, tries = 2, 8
	th := newTestHub(t, Config{MaxConnectionsPerParticipant: perParticipant})

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		won []*websocket.Conn
	)
	for range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := th.dial(q("participant_id", "alice"))
			if err == nil {
				mu.Lock()
				won = append(won, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Len(t, won, perParticipant, "exactly the cap's worth of attaches succeed")
	for range tries - perParticipant {
		assert.ErrorIs(t, th.attachErr(), ErrTooManyParticipantConnections)
	}
	th.attach("bob", nil) // another participant is not affected

	require.NoError(t, won[0].Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { // the slot is freed when the connection goes
		c, _, err := th.dial(q("participant_id", "alice"))
		if err != nil { // (assert, not require: this runs in Eventually's goroutine)
			assert.ErrorIs(t, <-th.attachErrs, ErrTooManyParticipantConnections)
			return false
		}
		won[0] = c
		return true
	}, 10*time.Second, 5*time.Millisecond)

	for _, c := range won {
		require.NoError(t, c.Close(websocket.StatusNormalClosure, ""))
	}
	require.Eventually(t, func() bool {
		th.hub.connMu.Lock()
		defer th.hub.connMu.Unlock()
		_, alice := th.hub.participantConns["alice"]
		return !alice && th.hub.participantConns["bob"] == 1
	}, 10*time.Second, 5*time.Millisecond, "a count that reaches zero is deleted")
}

// TestAdmitCountsPerCredential: admit refuses a credential at its cap
// whatever the participant, counts connections without a credential key
// against no credential, and forgets a credential once its connections are
// given back.
func TestAdmitCountsPerCredential(t *testing.T) {
	h := NewHub(Config{Backend: &fakeBackend{}, MaxConnectionsPerCredential: 2})
	var held []AttachRequest // admitted and not yet given back
	take := func(participant, credential string, maxConns int) error {
		r := AttachRequest{Identity: Identity{ParticipantID: participant}, CredentialKey: credential}
		err := h.admit(r, maxConns)
		if err == nil {
			held = append(held, r)
		}
		return err
	}
	giveBack := func(i int) {
		h.unadmit(held[i])
		held = append(held[:i], held[i+1:]...)
	}
	t.Cleanup(func() { // Shutdown waits for every admitted slot
		for len(held) > 0 {
			giveBack(0)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, h.Shutdown(ctx))
	})

	require.NoError(t, take("a", "k1", 0))
	require.NoError(t, take("b", "k1", 0))
	assert.ErrorIs(t, take("c", "k1", 0), ErrTooManyCredentialConnections)
	require.NoError(t, take("c", "k2", 0), "another credential has its own count")
	for range 3 {
		require.NoError(t, take("d", "", 0), "no credential key: not counted")
	}
	assert.ErrorIs(t, take("e", "k2", len(held)), ErrTooManyConnections, "the node-wide cap holds too")

	giveBack(0) // a, k1
	require.NoError(t, take("a", "k1", 0), "a slot given back is free again")
	for len(held) > 0 {
		giveBack(0)
	}
	h.connMu.Lock()
	defer h.connMu.Unlock()
	assert.Empty(t, h.participantConns, "counts that reach zero are deleted")
	assert.Empty(t, h.credentialConns, "counts that reach zero are deleted")
	assert.Zero(t, h.upgrading)
}
