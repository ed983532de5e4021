package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/sidecar/routing"
	"github.com/switchyard-gw/switchyard/ws"
)

// TestReconnectToAnotherNodeResumesFromTheOldMailbox: bob leaves node 2,
// five events wait for him there, he reconnects to node 3 with resume_from:
// node 3 takes his mailbox over, he gets exactly those five, in order, with
// his seq numbering continued, then new events once.
func TestReconnectToAnotherNodeResumesFromTheOldMailbox(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	bob, _ := attach(t, nodes[1], "bob", sessionQuery("s1"), nil)
	submit(t, nodes[0], event("alice", "s1", "first"))
	last := seqOf(bob.Next())
	require.NoError(t, bob.Conn.Close(websocket.StatusNormalClosure, ""))
	// Wait until the cluster knows bob is offline (the takeover needs it).
	require.Eventually(t, func() bool {
		es := dirParticipant(nodes[2], "bob")
		return len(es) == 1 && !es[0].Online
	}, 5*time.Second, 5*time.Millisecond)

	for i := 1; i <= 5; i++ {
		r := submit(t, nodes[0], event("alice", "s1", fmt.Sprint("missed ", i)))
		assert.Equal(t, float64(1), r.Body["queued"])
	}
	back, w := attach(t, nodes[2], "bob", url.Values{"resume_from": {strconv.FormatUint(last, 10)}}, nil)
	assert.Equal(t, true, w["resumed"])
	assert.Equal(t, float64(last+5), w["seq"], "the seq numbering moved with the mailbox")
	assert.Equal(t, []any{"s1"}, w["sessions"], "the sessions moved too")
	for i := 1; i <= 5; i++ {
		f := back.Next()
		require.Equal(t, last+uint64(i), seqOf(f))
		assert.Equal(t, fmt.Sprint("missed ", i), f["event"].(map[string]any)["message"])
	}
	// The old home forgot him: the directory has node 3 only, and a new event
	// arrives once.
	require.Eventually(t, func() bool {
		es := dirParticipant(nodes[0], "bob")
		return len(es) == 1 && es[0].Node == "node-3"
	}, 5*time.Second, 5*time.Millisecond)
	r := submit(t, nodes[0], event("alice", "s1", "after"))
	assert.Equal(t, float64(1), r.Body["recipients"])
	f := back.Next()
	assert.Equal(t, last+6, seqOf(f))
	assert.Equal(t, "after", f["event"].(map[string]any)["message"])
}

// TestDrainHandsParticipantsOver: node 2 drains while events keep coming;
// bob is told 1001, reconnects to node 3 with resume_from, and has every
// event exactly once, in order.
func TestDrainHandsParticipantsOver(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	bob, _ := attach(t, nodes[1], "bob", sessionQuery("s1"), nil)
	carol, _ := attach(t, nodes[1], "carol", sessionQuery("s1"), nil) // never comes back: handed over offline

	const total = 200
	sent := make(chan error, 1)
	// answers[i] is every answer submit i got, read once sent has a value.
	answers := make([][]string, total+1)
	go func() {
		for i := 1; i <= total; i++ {
			// A sender retries a 502 with the same event_id, as SPEC says.
			ev := event("alice", "s1", strconv.Itoa(i))
			ev["event_id"] = fmt.Sprint("drain-", i)
			r := postJSON(t, nodes[0].URL()+"/v1/gateway/events", ev, nil)
			answers[i] = append(answers[i], fmt.Sprint(time.Now().Format("15:04:05.000"), " ", r.Status, " ", string(r.Raw)))
			for try := 0; r.Status == 502 && try < 20; try++ {
				r = postJSON(t, nodes[0].URL()+"/v1/gateway/events", ev, nil)
				answers[i] = append(answers[i], fmt.Sprint(time.Now().Format("15:04:05.000"), " ", r.Status, " ", string(r.Raw)))
			}
			if r.Status != 200 {
				sent <- fmt.Errorf("submit %d answered %d: %s", i, r.Status, r.Raw)
				return
			}
		}
		sent <- nil
	}()

	// Read a while, then drain node 2 under load.
	got := map[int]bool{}
	var lastSeq uint64
	readOne := func(c *client) (int, uint64) {
		f := c.Next()
		require.Equal(t, "event", f["type"], "frame: %v", f)
		n, err := strconv.Atoi(f["event"].(map[string]any)["message"].(string))
		require.NoError(t, err)
		return n, seqOf(f)
	}
	for range 20 {
		n, seq := readOne(bob)
		got[n] = true
		lastSeq = seq
	}
	t.Logf("%s: node 2 drains; bob read event %v last", time.Now().Format("15:04:05.000"), lastSeq)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- nodes[1].Shutdown(ctx)
	}()
	for {
		_, data, err := bob.Conn.Read(context.Background())
		if err != nil {
			require.Equal(t, websocket.StatusGoingAway, websocket.CloseStatus(err), "told to reconnect: %v", err)
			break
		}
		var f struct {
			Seq   uint64 `json:"seq"`
			Event struct {
				Message string `json:"message"`
			} `json:"event"`
		}
		require.NoError(t, jsonUnmarshal(data, &f))
		n, _ := strconv.Atoi(f.Event.Message)
		require.False(t, got[n], "event %d twice", n)
		require.Equal(t, lastSeq+1, f.Seq)
		got[n], lastSeq = true, f.Seq
	}
	_ = carol

	back, _ := attach(t, nodes[2], "bob", url.Values{"resume_from": {strconv.FormatUint(lastSeq, 10)}}, nil)
	require.NoError(t, <-sent)
	require.NoError(t, <-drained)
	for len(got) < total {
		if len(got) > total-5 {
			var missing []int
			for i := 1; i <= total; i++ {
				if !got[i] {
					missing = append(missing, i)
				}
			}
			for _, i := range missing {
				t.Logf("still missing %d; its submits were answered %q", i, answers[i])
			}
		}
		n, seq := readOne(back)
		require.False(t, got[n], "event %d twice", n)
		require.Equal(t, lastSeq+1, seq, "seq continues without a gap")
		got[n], lastSeq = true, seq
	}
	for i := 1; i <= total; i++ {
		require.True(t, got[i], "event %d lost; its submits were answered %q", i, answers[i])
	}

	// carol was handed to a successor while offline: her events wait there.
	require.Eventually(t, func() bool {
		es := dirParticipant(nodes[0], "carol")
		return len(es) == 1 && es[0].Node != "node-2"
	}, 5*time.Second, 5*time.Millisecond)
}

// TestATakeoverJoinsTheSessionsOfAHomeFoundLate: node 3 takes bob over
// for an attach after a first home it was told of (node 2) has nothing of
// him; it finds him on node 1 and must be routed in his sessions before
// node 1 lets him go. An event submitted on node 1 the moment it has
// exported bob, and before node 3 installed him, reaches him on node 3:
// it is not answered 404, nor 200 without him (the drain test once lost an
// event so).
func TestATakeoverJoinsTheSessionsOfAHomeFoundLate(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[2], "bob", "node-1")
	queueMissed(t, nodes[0], 1)

	type answer struct {
		res routing.SubmitResult
		err error
	}
	meanwhile := make(chan answer, 1)
	var once atomic.Bool
	// Runs on node 1, in its release, under bob's release lock: a submit
	// there is network I/O under that lock, which only a test may do (the
	// submit does not need the lock: bob is not on node 1 any more).
	submitOnExport := func(string) {
		if once.CompareAndSwap(false, true) {
			res, err := nodes[0].gw.Submit(context.Background(), wire.Event{SenderID: "alice",
				SenderType: "ai", EventType: "message", SessionID: "s1", Message: "2 meanwhile"})
			meanwhile <- answer{res, err}
		}
	}
	nodes[0].gw.OnExported(submitOnExport)

	// No sessions known, and a first home that has nothing: as an attach
	// whose look at the directory came while bob moved between nodes.
	require.NoError(t, nodes[2].gw.Takeover(t.Context(), "bob", "ai", nil, []string{"node-2"}, true))

	var got answer
	select {
	case got = <-meanwhile:
	default:
		t.Fatal("node 1 never released bob")
	}
	require.NoError(t, got.err, "the event submitted while bob moved")
	assert.Equal(t, 1, got.res.Recipients, "bob got the event submitted while he moved")
	back, _ := attach(t, nodes[2], "bob", url.Values{"resume_from": {"0"}}, nil)
	for i := 1; i <= 2; i++ {
		f := back.Next()
		require.Equal(t, uint64(i), seqOf(f))
		assert.True(t, strings.HasPrefix(f["event"].(map[string]any)["message"].(string), strconv.Itoa(i)+" "))
	}
}

// TestADeliveryThatCannotFollowAParticipantFurtherFails: bob moved from
// node 1 to node 2. A delivery for him reaching node 1 is forwarded to
// node 2 while under the hop limit; one that reaches node 1 at the limit
// (a participant handed over twice in a moment: the drain test once lost
// an event so) is reported failed, so that its sender retries it, and not
// "not found", which let the submit answer 200 without him.
func TestADeliveryThatCannotFollowAParticipantFurtherFails(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	require.NoError(t, nodes[1].gw.Takeover(t.Context(), "bob", "ai", []string{"s1"}, []string{"node-1"}, false))
	require.NotNil(t, nodes[1].hub.Lookup("bob"))

	deliver := func(message string, hops int) (routing.DeliveryResult, error) {
		return nodes[0].gw.Deliver(t.Context(), wire.DeliveryRequest{RecipientIDs: []string{"bob"}, SessionID: "s1",
			Event: wire.Event{EventID: message, SenderID: "alice", SenderType: "ai", EventType: "message", Message: message}}, hops)
	}
	res, err := deliver("followed", 1)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Recipients, "forwarded to node 2")

	_, err = deliver("too far", routing.MaxHops)
	require.Error(t, err)
	e := wire.AsError(err)
	assert.Equal(t, http.StatusBadGateway, e.Status, "%v", err)
	assert.Equal(t, "recipients_unreachable", e.Code)
	assert.Equal(t, []string{"bob"}, e.Failed)

	// A participant no node has is not found, at the limit too: no retry
	// would reach it.
	_, err = nodes[0].gw.Deliver(t.Context(), wire.DeliveryRequest{RecipientIDs: []string{"nobody"}, SessionID: "s1",
		Event: wire.Event{EventID: "e3", SenderID: "alice", SenderType: "ai", EventType: "message", Message: "lost"}}, routing.MaxHops)
	assert.Equal(t, http.StatusNotFound, wire.AsError(err).Status, "%v", err)
}

// TestARefusedReleaseLeavesTheForwardingAlone: node 2 released bob to
// node 3; node 1, racing for him (a drain's successor against a reconnect),
// asks node 2 too and is refused (404). Node 2 must go on forwarding what
// reaches it for bob to node 3, not to node 1, which gives up on the 404
// and drops what it buffered (the client's drain test once lost an event
// so).
func TestARefusedReleaseLeavesTheForwardingAlone(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	require.NoError(t, nodes[1].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[0], "bob", "node-2")
	require.NoError(t, nodes[2].gw.Takeover(t.Context(), "bob", "ai", []string{"s1"}, []string{"node-2"}, false))

	st, status, err := nodes[0].gw.Release(t.Context(), "node-2", "bob")
	require.NoError(t, err)
	require.Nil(t, st)
	require.Equal(t, http.StatusNotFound, status)

	// A delivery that reaches node 2 at hop 1 (its sender's view was
	// stale) has one forward left: to node 3 it reaches bob.
	res, err := nodes[1].gw.Deliver(t.Context(), wire.DeliveryRequest{RecipientIDs: []string{"bob"}, SessionID: "s1",
		Event: wire.Event{EventID: "e1", SenderID: "alice", SenderType: "ai", EventType: "message", Message: "1 forwarded"}}, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Recipients)
	back, _ := attach(t, nodes[2], "bob", url.Values{"resume_from": {"0"}}, nil)
	f := back.Next()
	assert.Equal(t, "1 forwarded", f["event"].(map[string]any)["message"])
}

// BenchmarkResumeElsewhere measures how long a participant that reconnects
// to another node takes to receive 1,000 events it missed: the takeover
// (announce, release, install) plus the replay.
func BenchmarkResumeElsewhere(b *testing.B) {
	const missed = 1000
	nodes := startCluster(b, 2, Config{MailboxSize: 2 * missed})
	b.StopTimer()
	var total time.Duration
	for i := range b.N {
		id := fmt.Sprint("p", i)
		require.NoError(b, nodes[0].gw.Join(id, "ai", "s"+id))
		for j := 1; j <= missed; j++ {
			ev := wire.Event{SenderID: "src", SenderType: "ai", EventType: "message", SessionID: "s" + id, Message: strconv.Itoa(j)}
			_, err := nodes[0].gw.Submit(context.Background(), ev)
			require.NoError(b, err)
		}
		b.StartTimer()
		start := time.Now()
		cl, _ := attach(b, nodes[1], id, url.Values{"resume_from": {"0"}, "batch": {"1"}}, nil)
		for j := uint64(1); j <= missed; j++ {
			require.Equal(b, j, seqOf(cl.Next()))
		}
		total += time.Since(start)
		b.StopTimer()
		_ = cl.Conn.CloseNow()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/resume")
}

// queueMissed submits n events of about 1 KiB each to session s1 on node,
// numbered 1..n in their message, and requires each to be queued.
func queueMissed(t *testing.T, node *Node, n int) { queueNumbered(t, node, 1, n) }

// queueNumbered submits the events numbered from..to (see queueMissed).
func queueNumbered(t *testing.T, node *Node, from, to int) {
	t.Helper()
	filler := strings.Repeat("x", 1024)
	for i := from; i <= to; i++ {
		ev := wire.Event{SenderID: "alice", SenderType: "ai", EventType: "message", SessionID: "s1",
			Message: fmt.Sprintf("%d %s", i, filler)}
		res, err := node.gw.Submit(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, 1, res.Queued, "event %d", i)
	}
}

// readMissed reads n event frames and requires them to be the events
// queueMissed numbered 1..n, once each, in order, with seqs from first on.
func readMissed(t *testing.T, c *client, n int, first uint64) {
	t.Helper()
	for i := 1; i <= n; i++ {
		f := c.Next()
		require.Equal(t, "event", f["type"], "frame: %v", f)
		require.Equal(t, first+uint64(i-1), seqOf(f))
		msg := f["event"].(map[string]any)["message"].(string)
		require.Equal(t, strconv.Itoa(i), strings.SplitN(msg, " ", 2)[0], "event %d in order", i)
	}
}

// waitHomedOn waits until node's directory has participant id homed on
// home alone, offline.
func waitHomedOn(t *testing.T, node *Node, id, home string) {
	t.Helper()
	require.Eventually(t, func() bool {
		es := dirParticipant(node, id)
		return len(es) == 1 && es[0].Node == home && !es[0].Online
	}, 10*time.Second, 5*time.Millisecond)
}

// TestResumeElsewhereCarriesAMailboxOverOneMiB: 1,000 events of 1 KiB wait
// for bob on node 1 (a release answer well over 1 MiB); a client that saw
// none attaches to node 2 and gets all of them, in order, seq continuing.
func TestResumeElsewhereCarriesAMailboxOverOneMiB(t *testing.T) {
	const missed = 1000
	nodes := startCluster(t, 2, Config{})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], missed)

	back, w := attach(t, nodes[1], "bob", url.Values{"batch": {"1"}}, nil)
	assert.Equal(t, true, w["resumed"])
	assert.Equal(t, float64(missed), w["seq"], "the seq numbering moved with the mailbox")
	readMissed(t, back, missed, 1)
}

// TestTakeoverCutMidwayLosesNothing: node 1 holds 300 events for bob; every
// answer to node 2's release is cut halfway (node 1 had let him go): node 2
// gives him back to node 1 and answers the attach 503 participant_moving,
// rather than start him afresh. An event sent meanwhile joins the others.
// Then one answer is cut: node 2 asks again, gets the same state, and bob
// has every event exactly once, in order.
func TestTakeoverCutMidwayLosesNothing(t *testing.T) {
	const missed = 300
	px := newFaultProxy(t)
	nodes := cfCluster(t, 2, Config{}, map[int]*faultProxy{0: px}, nil)
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], missed)

	px.cutReleaseAnswers(1 << 30)
	assert.Equal(t, http.StatusServiceUnavailable, refusedAttach(t, nodes[1], "bob", nil).Status,
		"not welcomed with an empty mailbox")
	assert.Greater(t, px.releasesCut.Load(), int64(1), "the release was asked for again")
	assert.Nil(t, nodes[1].hub.Lookup("bob"), "given back")
	require.NotNil(t, nodes[0].hub.Lookup("bob"), "bob is back on node 1")
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueNumbered(t, nodes[1], missed+1, missed+1)

	px.cutReleaseAnswers(1)
	cut := px.releasesCut.Load()
	back, w := attach(t, nodes[1], "bob", url.Values{"batch": {"1"}}, nil)
	assert.Equal(t, cut+1, px.releasesCut.Load(), "the first answer was cut")
	assert.Equal(t, true, w["resumed"])
	assert.Equal(t, float64(missed+1), w["seq"])
	readMissed(t, back, missed+1, 1)
	require.Eventually(t, func() bool { return nodes[0].gw.HeldCount() == 0 }, 10*time.Second, 5*time.Millisecond,
		"node 2 confirmed: node 1 dropped its copy")
	r := submit(t, nodes[0], event("alice", "s1", "after"))
	assert.Equal(t, float64(1), r.Body["recipients"])
	f := back.Next()
	assert.Equal(t, uint64(missed+2), seqOf(f), "once, seq continuing")
}

// TestDrainHandsOverAMailboxOverOneMiB: node 1 drains with 1,000 events of
// 1 KiB waiting for bob; its successor takes them all over, and bob, back
// on node 2, gets every one in order.
func TestDrainHandsOverAMailboxOverOneMiB(t *testing.T) {
	const missed = 1000
	nodes := startCluster(t, 2, Config{})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], missed)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, nodes[0].Shutdown(ctx))
	require.NotNil(t, nodes[1].hub.Lookup("bob"), "handed over before the drain ended")
	back, w := attach(t, nodes[1], "bob", url.Values{"batch": {"1"}}, nil)
	assert.Equal(t, true, w["resumed"])
	assert.Equal(t, float64(missed), w["seq"])
	readMissed(t, back, missed, 1)
}

// TestTakeoverPastMaxHandoffBytesLeavesTheParticipantHome: node 2 takes
// states of at most 64 KiB; bob's 200 KiB mailbox on node 1 is not moved:
// the attach on node 2 is answered 503, and bob, back on node 1, has every
// event once.
func TestTakeoverPastMaxHandoffBytesLeavesTheParticipantHome(t *testing.T) {
	const missed = 200
	nodes := cfCluster(t, 2, Config{}, nil, func(i int, c *Config) {
		if i == 1 {
			c.MaxHandoffBytes = 64 << 10
		}
	})
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], missed)

	assert.Equal(t, http.StatusServiceUnavailable, refusedAttach(t, nodes[1], "bob", nil).Status,
		"not welcomed with an empty mailbox")
	waitHomedOn(t, nodes[1], "bob", "node-1")

	back, w := attach(t, nodes[0], "bob", url.Values{"batch": {"1"}}, nil)
	assert.Equal(t, float64(missed), w["seq"])
	readMissed(t, back, missed, 1)
}

// TestAHeldCopyIsDroppedWhenTheParticipantComesBack: bob moves from node 1
// to node 2 and node 2's confirm is lost, so node 1 keeps a copy of what
// it released. Bob comes back to node 1 (taken over from node 2), then
// moves to node 2 again: node 1 hands over the bob it has now, not the
// stale copy, and he gets the newest event once, seq continuing.
func TestAHeldCopyIsDroppedWhenTheParticipantComesBack(t *testing.T) {
	px := newFaultProxy(t)
	nodes := cfCluster(t, 2, Config{ForwardTimeout: 2 * time.Second}, map[int]*faultProxy{0: px}, nil)
	px.failConfirms.Store(true)
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueNumbered(t, nodes[0], 1, 3)

	moveTo := func(node *Node, first, last int) {
		t.Helper()
		c, _ := attach(t, node, "bob", url.Values{"batch": {"1"}}, nil)
		for i := first; i <= last; i++ {
			f := c.Next()
			require.Equal(t, uint64(i), seqOf(f))
			require.Equal(t, strconv.Itoa(i), strings.SplitN(f["event"].(map[string]any)["message"].(string), " ", 2)[0])
		}
		require.NoError(t, c.Conn.Close(websocket.StatusNormalClosure, ""))
		for _, n := range nodes {
			waitHomedOn(t, n, "bob", node.Name())
		}
	}
	moveTo(nodes[1], 1, 3)
	require.Equal(t, 1, nodes[0].gw.HeldCount(), "the confirm was lost: node 1 holds its copy")
	queueNumbered(t, nodes[1], 4, 5)
	moveTo(nodes[0], 4, 5)
	queueNumbered(t, nodes[0], 6, 6)
	moveTo(nodes[1], 6, 6)
}

// TestMaxStateBytesFitsTheFullestMailbox: the default --max-handoff-bytes
// holds the fullest mailbox a node accepts, and a mailbox byte budget
// brings it down to what that budget lets a mailbox hold.
func TestMaxStateBytesFitsTheFullestMailbox(t *testing.T) {
	unbudgeted := routing.MaxStateBytes(1<<20, 1024, -1)
	require.Greater(t, unbudgeted, int64(1024)*(6<<20)*4/3, "1024 events of a 1 MiB body re-encoded 6 for 1, as base64")
	budgeted := routing.MaxStateBytes(1<<20, 1024, 256<<20)
	require.Greater(t, budgeted, int64(256<<20)*4/3, "a budget's worth of frames as base64")
	require.Less(t, budgeted, int64(400<<20))
	require.Equal(t, unbudgeted, routing.MaxStateBytes(1<<20, 1024, 1<<50), "a budget larger than the mailboxes can use changes nothing")
	cfg := Config{}.withDefaults()
	require.Equal(t, budgeted, cfg.MaxHandoffBytes, "the default follows the default budget")
}

// TestReleaseAnswersTheParticipantHereNotAStaleCopy: node 1 still holds a
// copy of bob it released to node 2 (the confirm was lost), and bob is
// back on node 1 without a takeover from node 2 (node 2 restarted and bob
// attached to node 1 afresh). A release asked by node 2 again must see the
// bob node 1 has now, attached there (409), not answer the stale copy and
// leave him living on both nodes.
func TestReleaseAnswersTheParticipantHereNotAStaleCopy(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	stale := ws.ParticipantState{ID: "bob", Type: "ai", Sessions: []string{"s1"}, NextSeq: 4,
		Events: []ws.EventState{{Seq: 3, ID: "old", At: time.Now(), Tail: []byte(`"old"}`)}}}
	nodes[0].gw.Hold(&stale, nodes[1].Name(), time.Hour)

	bob, _ := attach(t, nodes[0], "bob", sessionQuery("s1"), nil)
	defer bob.Conn.CloseNow()
	st, status, err := nodes[1].gw.Release(t.Context(), nodes[0].Name(), "bob")
	require.NoError(t, err)
	assert.Nil(t, st, "the stale copy must not be answered")
	assert.Equal(t, http.StatusConflict, status, "bob is attached to node 1")
	assert.NotNil(t, nodes[0].hub.Lookup("bob"))
}

// TestAnAttachWaitingOnAFailedTakeoverIsNotStartedAfresh: node 2 is taking
// bob over for a first attach when a second attach of bob arrives and
// waits for that takeover. Every release answer is cut, so bob is given
// back to node 1: the second attach must not then start a fresh, empty bob
// on node 2 (he would live on both nodes); it is refused like the first,
// 503 participant_moving.
func TestAnAttachWaitingOnAFailedTakeoverIsNotStartedAfresh(t *testing.T) {
	const missed = 50
	px := newFaultProxy(t)
	nodes := cfCluster(t, 2, Config{ForwardTimeout: 2 * time.Second}, map[int]*faultProxy{0: px}, nil)
	require.NoError(t, nodes[0].gw.Join("bob", "ai", "s1"))
	waitHomedOn(t, nodes[1], "bob", "node-1")
	queueMissed(t, nodes[0], missed)
	px.cutReleaseAnswers(1 << 30)

	statusOf := func() int {
		c, resp, err := dial(nodes[1], "bob", nil, nil)
		if err == nil {
			_ = c.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			return 0
		}
		return resp.StatusCode
	}
	first := make(chan int, 1)
	go func() { first <- statusOf() }()
	require.Eventually(t, func() bool { return nodes[1].hub.Lookup("bob") != nil }, 10*time.Second, time.Millisecond,
		"node 2 prepares bob for the first attach")
	assert.Equal(t, http.StatusServiceUnavailable, statusOf(), "the waiting attach is refused, not welcomed afresh")
	assert.Equal(t, http.StatusServiceUnavailable, <-first)
	assert.Nil(t, nodes[1].hub.Lookup("bob"), "given back")
	require.NotNil(t, nodes[0].hub.Lookup("bob"), "bob is back on node 1")
}

// TestShutdownDropsHeldStates: a stopped node serves no release, restore or
// confirm any more, so the copies it held for them are dropped with their
// timers, not left to fire (and keep the states) for --offline-ttl.
func TestShutdownDropsHeldStates(t *testing.T) {
	n := startNode(t, Config{})
	n.gw.Hold(&ws.ParticipantState{ID: "bob"}, "node-2", time.Hour)
	require.Equal(t, 1, n.gw.HeldCount())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, n.Shutdown(ctx))
	assert.Zero(t, n.gw.HeldCount())
}
