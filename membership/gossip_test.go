package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

// fastTimers are the tests' fast memberlist timers, shared with the
// sidecar's and the client's tests.
var fastTimers = testkit.FastGossip

// startGossips runs n Gossip nodes on 127.0.0.1 without the HTTP push, so
// changes travel by memberlist alone (direct TCP, broadcasts, push/pull).
func startGossips(t *testing.T, n int, key []byte) []*Gossip {
	t.Helper()
	var out []*Gossip
	for i := range n {
		cfg := GossipConfig{NodeName: fmt.Sprint("g", i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", 9000+i),
			Bind: "127.0.0.1:0", Key: key, Memberlist: fastTimers, RejoinInterval: 300 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)}
		if len(out) > 0 {
			cfg.Join = []string{out[0].GossipAddr()}
		}
		g, err := NewGossip(cfg, NewDirectory())
		require.NoError(t, err)
		t.Cleanup(func() { _ = g.Shutdown() })
		out = append(out, g)
	}
	require.Eventually(t, func() bool {
		for _, g := range out {
			if g.ml.NumMembers() != n {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	return out
}

func TestGossipSpreadsLocalEntriesAndDropsLeavers(t *testing.T) {
	key := make([]byte, 32)
	gs := startGossips(t, 3, key)
	gs[1].PutLocal(Entry{Participant: "bob", Type: "ai", Sessions: []string{"s1"}, Online: true})
	require.True(t, gs[1].Sync(context.Background()))
	for _, g := range gs {
		require.Eventually(t, func() bool { return len(g.Directory().Session("s1")) == 1 }, 5*time.Second, 5*time.Millisecond)
		e := g.Directory().Session("s1")[0]
		assert.Equal(t, "g2", e.Node)
		assert.Equal(t, "bob", e.Participant)
	}
	url, ok := gs[0].NodeURL("g2")
	require.True(t, ok)
	assert.Equal(t, "http://127.0.0.1:9001", url)

	gs[1].DeleteLocal("bob")
	for _, g := range gs {
		require.Eventually(t, func() bool { return len(g.Directory().Participant("bob")) == 0 }, 5*time.Second, 5*time.Millisecond)
	}

	gs[2].PutLocal(Entry{Participant: "carol", Sessions: []string{"s2"}, Online: true})
	require.Eventually(t, func() bool { return len(gs[0].Directory().Session("s2")) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, gs[2].Leave(time.Second))
	require.NoError(t, gs[2].Shutdown())
	require.Eventually(t, func() bool { return len(gs[0].Directory().Session("s2")) == 0 }, 5*time.Second, 5*time.Millisecond,
		"a node that left loses its entries everywhere")
	require.Eventually(t, func() bool {
		for _, m := range gs[0].Members() {
			if m.Name == "g3" {
				return m.State == StateLeft
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
}

func TestGossipNewcomerLearnsExistingEntries(t *testing.T) {
	gs := startGossips(t, 2, nil)
	gs[0].PutLocal(Entry{Participant: "early", Sessions: []string{"s"}, Online: true})
	require.Eventually(t, func() bool { return len(gs[1].Directory().Session("s")) == 1 }, 5*time.Second, 5*time.Millisecond)

	late, err := NewGossip(GossipConfig{NodeName: "late", Bind: "127.0.0.1:0", Join: []string{gs[1].GossipAddr()},
		Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)}, NewDirectory())
	require.NoError(t, err)
	t.Cleanup(func() { _ = late.Shutdown() })
	require.Eventually(t, func() bool { return len(late.Directory().Session("s")) == 1 }, 5*time.Second, 5*time.Millisecond,
		"a node that joins through a third learns the entries of every node")
}

func TestGossipDropsUndecodableMessages(t *testing.T) {
	gs := startGossips(t, 2, nil)
	gs[0].handleMessage([]byte("garbage"))
	require.Error(t, gs[0].HandlePush([]byte{msgUpdates, '{'}, ""))
	// A raw UDP packet of garbage at the gossip port: memberlist drops it.
	conn, err := net.Dial("udp", gs[0].GossipAddr())
	require.NoError(t, err)
	_, _ = conn.Write([]byte("\x00\x01 not a memberlist packet"))
	require.NoError(t, conn.Close())
	// Still working.
	gs[1].PutLocal(Entry{Participant: "p", Sessions: []string{"s"}, Online: true})
	require.Eventually(t, func() bool { return len(gs[0].Directory().Session("s")) == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestParseGossipKey(t *testing.T) {
	_, err := ParseGossipKey("not base64!")
	assert.Error(t, err)
	_, err = ParseGossipKey("c2hvcnQ=") // "short"
	assert.ErrorContains(t, err, "16, 24 or 32")
	key, err := ParseGossipKey("MDEyMzQ1Njc4OWFiY2RlZg==") // 16 bytes
	require.NoError(t, err)
	assert.Len(t, key, 16)
}

func TestGossipWithDifferentKeysDoNotJoin(t *testing.T) {
	a := startGossips(t, 1, []byte("0123456789abcdef"))[0]
	b, err := NewGossip(GossipConfig{NodeName: "intruder", Bind: "127.0.0.1:0", Key: []byte("fedcba9876543210"),
		Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)}, NewDirectory())
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Shutdown() })
	_, err = b.ml.Join([]string{a.GossipAddr()})
	assert.Error(t, err, "a node without the gossip key cannot join")
	assert.Equal(t, 1, a.ml.NumMembers())
}

// TestGossipKeyRotation: the three steps of docs/SECURITY.md overlap: a
// node on the old key alone, one sending the old key and accepting the new,
// and one sending the new key and accepting the old are one cluster.
func TestGossipKeyRotation(t *testing.T) {
	oldKey, newKey := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	a := startGossips(t, 1, oldKey)[0]
	start := func(name string, key []byte, extra []byte) *Gossip {
		g, err := NewGossip(GossipConfig{NodeName: name, Bind: "127.0.0.1:0", Key: key, ExtraKeys: [][]byte{extra},
			Join: []string{a.GossipAddr()}, Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)}, NewDirectory())
		require.NoError(t, err)
		t.Cleanup(func() { _ = g.Shutdown() })
		return g
	}
	b := start("step1", oldKey, newKey)
	require.Eventually(t, func() bool { return a.ml.NumMembers() == 2 }, 5*time.Second, 10*time.Millisecond)
	c, err := NewGossip(GossipConfig{NodeName: "step2", Bind: "127.0.0.1:0", Key: newKey, ExtraKeys: [][]byte{oldKey},
		Join: []string{b.GossipAddr()}, Memberlist: fastTimers, Logger: slog.New(slog.DiscardHandler)}, NewDirectory())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Shutdown() })
	require.Eventually(t, func() bool { return b.ml.NumMembers() == 3 && c.ml.NumMembers() >= 2 },
		5*time.Second, 10*time.Millisecond, "the step-1 and step-2 nodes understand each other")
}

// TestARestartedNodeIsHeardAgainAfterItsLeave: a node that said it was
// leaving and came back under its name before memberlist reported a leave
// (a StatefulSet pod restarting fast: memberlist then sees an update, not a
// leave and a join) is listened to in its new life; and a late "leaving" of
// its old life does not drop the new life's entries.
func TestARestartedNodeIsHeardAgainAfterItsLeave(t *testing.T) {
	g := startGossips(t, 1, nil)[0]
	metaOf := func(epoch int64) []byte {
		b, err := json.Marshal(meta{URL: "http://127.0.0.1:1", Epoch: epoch})
		require.NoError(t, err)
		return b
	}
	entry := func() *Entry { return &Entry{Type: "ai", Sessions: []string{"s1"}, Online: true} }
	update := func(epoch int64, version uint64, p string) nodeMessage {
		return nodeMessage{Node: "pod-0", Epoch: epoch, Changes: []versioned{{Participant: p, Version: version, Entry: entry()}}}
	}
	routed := func(p string) bool {
		for _, e := range g.Directory().Session("s1") {
			if e.Participant == p && e.Node == "pod-0" {
				return true
			}
		}
		return false
	}

	g.nodeJoined(&memberlist.Node{Name: "pod-0", Meta: metaOf(1)})
	g.apply(msgUpdates, update(1, 1, "alice"))
	require.True(t, routed("alice"))
	g.apply(msgLeaving, nodeMessage{Node: "pod-0", Epoch: 1})
	require.False(t, routed("alice"), "a leaving node's routes drop at once")

	g.nodeUpdated(&memberlist.Node{Name: "pod-0", Meta: metaOf(2)}) // the new life, seen as an update
	g.apply(msgUpdates, update(2, 1, "bob"))
	assert.True(t, routed("bob"), "the new life's entries are applied")

	g.apply(msgLeaving, nodeMessage{Node: "pod-0", Epoch: 1}) // the old life's leave, late
	assert.True(t, routed("bob"), "a late leave of the old life drops nothing of the new one")
	g.apply(msgUpdates, update(1, 2, "mallory"))
	assert.False(t, routed("mallory"), "nor is the old life heard again")
}
