package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/testkit"
)

func sessionQuery(sessions ...string) url.Values {
	return url.Values{"session_id": sessions}
}

func event(sender, session, message string) map[string]any {
	return map[string]any{"sender_id": sender, "sender_type": "ai", "event_type": "message",
		"message": message, "session_id": session}
}

func TestSubmitReachesEveryOtherParticipantOnce(t *testing.T) {
	n := startNode(t, Config{})
	alice, _ := attach(t, n, "alice", sessionQuery("s1"), nil)
	bob, w := attach(t, n, "bob", sessionQuery("s1"), nil)
	assert.Equal(t, []any{"s1"}, w["sessions"])
	assert.Equal(t, n.Name(), w["node"])

	r := submit(t, n, event("alice", "s1", "hello"))
	assert.Equal(t, float64(1), r.Body["recipients"], "the sender is not a recipient")
	id := r.Body["event_id"].(string)
	require.NotEmpty(t, id)

	f := bob.Next()
	assert.Equal(t, "event", f["type"])
	assert.Equal(t, uint64(1), seqOf(f))
	assert.Equal(t, id, f["event_id"])
	assert.Equal(t, "s1", f["session_id"])
	inner := f["event"].(map[string]any)
	assert.Equal(t, "hello", inner["message"])
	assert.Equal(t, "alice", inner["sender_id"])

	// bob answers; alice (the first sender) gets it, as seq 1 of her own.
	submit(t, n, event("bob", "s1", "hi alice"))
	f = alice.Next()
	assert.Equal(t, uint64(1), seqOf(f))
	assert.Equal(t, "hi alice", f["event"].(map[string]any)["message"])
}

func TestRecipientIDAddressesOneParticipant(t *testing.T) {
	n := startNode(t, Config{})
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	carol, _ := attach(t, n, "carol", sessionQuery("s1"), nil)
	ev := event("alice", "s1", "only for carol")
	ev["recipient_id"] = "carol"
	r := submit(t, n, ev)
	assert.Equal(t, float64(1), r.Body["recipients"])
	assert.Equal(t, "only for carol", carol.Next()["event"].(map[string]any)["message"])

	// bob got nothing: the next thing he sees is the next session event.
	submit(t, n, event("alice", "s1", "for all"))
	assert.Equal(t, "for all", bob.Next()["event"].(map[string]any)["message"])
}

// TestOrderingTenThousandEvents: one sender, a session of three, 10,000
// events; every recipient gets them all, in order, seq without gaps.
func TestOrderingTenThousandEvents(t *testing.T) {
	const total = 10000
	n := startNode(t, Config{})
	members := []string{"r1", "r2", "r3"}
	clients := make([]*client, len(members))
	for i, m := range members {
		clients[i], _ = attach(t, n, m, sessionQuery("big"), nil)
	}
	type result struct {
		who string
		err error
	}
	results := make(chan result, len(members))
	for i, c := range clients {
		go func() {
			results <- result{members[i], readInOrder(c, total)}
		}()
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer httpc.CloseIdleConnections()
	for i := 1; i <= total; i++ {
		body := fmt.Sprintf(`{"sender_id":"src","sender_type":"ai","event_type":"message","session_id":"big","message":"%d"}`, i)
		resp, err := httpc.Post(n.URL()+"/v1/gateway/events", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	for range members {
		r := <-results
		assert.NoError(t, r.err, r.who)
	}
}

// readInOrder reads total event frames and checks seq i carries message i.
// It runs off the test goroutine, so it returns errors instead of failing.
func readInOrder(c *client, total int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := 1
	for want <= total {
		_, data, err := c.Conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("after %d events: %w", want-1, err)
		}
		var f struct {
			Type  string `json:"type"`
			Seq   int    `json:"seq"`
			Event struct {
				Message string `json:"message"`
			} `json:"event"`
		}
		if err := jsonUnmarshal(data, &f); err != nil {
			return err
		}
		if f.Type != "event" || f.Seq != want || f.Event.Message != strconv.Itoa(want) {
			return fmt.Errorf("frame %d: got type %s seq %d message %s", want, f.Type, f.Seq, f.Event.Message)
		}
		want++
	}
	return nil
}

func TestResumeAfterDisconnectGetsExactlyTheMissedEvents(t *testing.T) {
	n := startNode(t, Config{})
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	submit(t, n, event("alice", "s1", "before"))
	last := seqOf(bob.Next())
	require.NoError(t, bob.Conn.Close(websocket.StatusNormalClosure, "bye"))

	for i := 1; i <= 5; i++ {
		r := submit(t, n, event("alice", "s1", fmt.Sprint("missed ", i)))
		assert.Equal(t, float64(1), r.Body["recipients"], "an offline participant is still routable")
	}
	back, w := attach(t, n, "bob", url.Values{"resume_from": {strconv.FormatUint(last, 10)}}, nil)
	assert.Equal(t, true, w["resumed"])
	assert.Equal(t, float64(last+5), w["seq"])
	for i := 1; i <= 5; i++ {
		f := back.Next()
		require.Equal(t, "event", f["type"])
		assert.Equal(t, last+uint64(i), seqOf(f))
		assert.Equal(t, fmt.Sprint("missed ", i), f["event"].(map[string]any)["message"])
	}
	// Exactly those five: the next frame is a new event, not a replay.
	submit(t, n, event("alice", "s1", "after"))
	f := back.Next()
	assert.Equal(t, last+6, seqOf(f))
	assert.Equal(t, "after", f["event"].(map[string]any)["message"])
}

func TestReconnectWithoutResumeStartsAfterLastWritten(t *testing.T) {
	n := startNode(t, Config{})
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	submit(t, n, event("alice", "s1", "one"))
	require.Equal(t, uint64(1), seqOf(bob.Next()))
	require.NoError(t, bob.Conn.Close(websocket.StatusNormalClosure, ""))
	submit(t, n, event("alice", "s1", "waited"))

	back, w := attach(t, n, "bob", nil, nil)
	assert.Equal(t, true, w["resumed"], "an event waited for bob")
	f := back.Next()
	assert.Equal(t, uint64(2), seqOf(f))
	assert.Equal(t, "waited", f["event"].(map[string]any)["message"])
}

func TestResumeBeyondMailboxGivesGap(t *testing.T) {
	n := startNode(t, Config{MailboxSize: 4})
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	require.NoError(t, bob.Conn.Close(websocket.StatusNormalClosure, ""))
	for i := 1; i <= 10; i++ {
		submit(t, n, event("alice", "s1", fmt.Sprint(i)))
	}
	back, _ := attach(t, n, "bob", url.Values{"resume_from": {"0"}}, nil)
	gap := back.Next()
	assert.Equal(t, "gap", gap["type"])
	assert.Equal(t, float64(1), gap["from_seq"])
	assert.Equal(t, float64(6), gap["to_seq"])
	for i := 7; i <= 10; i++ {
		f := back.Next()
		assert.Equal(t, uint64(i), seqOf(f))
	}
}

// TestSlowConsumerDoesNotDelayOthersAndResumes: a participant that stops
// reading never delays another one; it is closed with 4000 and resumes from
// its mailbox without loss.
func TestSlowConsumerDoesNotDelayOthersAndResumes(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) { testSlowConsumer(t, batch) })
	}
}

// testSlowConsumer publishes events until the node cuts the slow client,
// rather than a fixed burst: how many events the kernel's socket buffers
// absorb before the write queue starts to grow depends on the machine (its
// tcp_wmem, how far autotuning got), not on Switchyard.
func testSlowConsumer(t *testing.T, batch bool) {
	const (
		maxEvents = 4000 // 32 MiB: more than any loopback socket buffers
		afterCut  = 10   // events published once the slow client is cut
	)
	n := startNode(t, Config{WriteQueueBytes: 256 << 10, MailboxSize: maxEvents + afterCut,
		// The slow client's writer is stuck on its full socket from the
		// first few hundred events until the test reads it, and the write
		// deadline would drop it without a close frame: that deadline is
		// not what this test is about, and a loaded machine reaches 10 s.
		// So is the keepalive, which would drop the silent client too.
		WriteTimeout: time.Hour, PingInterval: time.Hour})
	fastQuery := sessionQuery("s1")
	q := url.Values{"participant_id": {"slow"}, "session_id": {"s1"}}
	if batch {
		fastQuery.Set("batch", "1")
		q.Set("batch", "1")
	}
	fast, _ := attach(t, n, "fast", fastQuery, nil)

	// A small receive buffer: the node's writes back up once slow stops
	// reading.
	slow, _ := testkit.Attach(t, testkit.AttachURL(n.URL(), q),
		&websocket.DialOptions{HTTPClient: testkit.SmallBufferClient(t, 16<<10)})

	// The slow client reads nothing from here on; the fast one gets each
	// event before the next is published. SlowConsumers counts the cut,
	// made while the submit that passed the slow client's write queue bound
	// is delivered, so it is up to date when the submit answers.
	big := strings.Repeat("x", 8<<10)
	publish := func(seq uint64) {
		t.Helper()
		submit(t, n, event("src", "s1", fmt.Sprintf("%d %s", seq, big)))
		require.Equal(t, seq, seqOf(fast.Next()), "the fast participant gets each event while the slow one is stalled")
	}
	var cutAt uint64 // the event that passed the slow client's write queue bound
	for seq := uint64(1); cutAt == 0; seq++ {
		require.LessOrEqual(t, seq, uint64(maxEvents), "the slow consumer was never cut")
		publish(seq)
		if counterOf(t, n.metrics.Hub.SlowConsumers) > 0 {
			cutAt = seq
		}
	}
	total := cutAt + afterCut
	for seq := cutAt + 1; seq <= total; seq++ {
		publish(seq)
	}
	require.Equal(t, float64(1), counterOf(t, n.metrics.Hub.SlowConsumers), "only the slow participant was cut")

	// Now the slow client reads: frames in order (never split across
	// messages when batched), then close 4000.
	readCtx, cancelRead := context.WithTimeout(context.Background(), time.Minute)
	defer cancelRead()
	lastSeq := uint64(0)
	for {
		_, data, err := slow.Conn.Read(readCtx)
		if err != nil {
			require.Equal(t, websocket.StatusCode(4000), websocket.CloseStatus(err), "closed as a slow consumer: %v", err)
			break
		}
		for _, frame := range strings.Split(string(data), "\n") {
			var f struct {
				Seq uint64 `json:"seq"`
			}
			require.NoError(t, jsonUnmarshal([]byte(frame), &f), "every frame is whole JSON")
			require.Equal(t, lastSeq+1, f.Seq)
			lastSeq = f.Seq
		}
	}
	require.Less(t, lastSeq, cutAt, "nothing from the event that passed the bound on was written to the slow consumer")
	t.Logf("cut at event %d; the slow consumer had read %d", cutAt, lastSeq)

	resume := url.Values{"resume_from": {strconv.FormatUint(lastSeq, 10)}}
	if batch {
		resume.Set("batch", "1")
	}
	back, w := attach(t, n, "slow", resume, nil)
	assert.Equal(t, true, w["resumed"])
	for want := lastSeq + 1; want <= total; want++ {
		require.Equal(t, want, seqOf(back.Next()), "nothing lost that is still in the mailbox")
	}
}

// counterOf reads a Prometheus counter.
var counterOf = testkit.MetricValue

func TestSubmitJoinLeaveAckFrames(t *testing.T) {
	n := startNode(t, Config{})
	alice, _ := attach(t, n, "alice", url.Values{"participant_type": {"human"}}, nil)
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)

	alice.Send(map[string]any{"type": "join", "id": "j1", "session_id": "s1"})
	res := alice.Next()
	assert.Equal(t, map[string]any{"type": "result", "id": "j1", "status": float64(200),
		"body": map[string]any{"status": "ok", "session_id": "s1"}}, res)

	alice.Send(map[string]any{"type": "submit", "id": "c1", "event": map[string]any{
		"event_type": "message", "message": "from the socket", "session_id": "s1"}})
	res = alice.Next()
	require.Equal(t, "result", res["type"])
	assert.Equal(t, "c1", res["id"])
	assert.Equal(t, float64(200), res["status"])
	body := res["body"].(map[string]any)
	assert.Equal(t, float64(1), body["recipients"])

	f := bob.Next()
	inner := f["event"].(map[string]any)
	assert.Equal(t, body["event_id"], f["event_id"])
	assert.Equal(t, "alice", inner["sender_id"], "sender_id defaults to the connection's participant")
	assert.Equal(t, "human", inner["sender_type"], "sender_type defaults to its participant_type")

	// A failing submit with an id is answered like REST would.
	alice.Send(map[string]any{"type": "submit", "id": "c2", "event": map[string]any{"event_type": "message"}})
	res = alice.Next()
	assert.Equal(t, float64(422), res["status"])
	assert.Equal(t, "session_id", res["body"].(map[string]any)["field"])

	// Without an id, a failure is an error frame.
	alice.Send(map[string]any{"type": "submit", "event": map[string]any{"event_type": "message", "session_id": "nobody-here"}})
	errf := alice.Next()
	assert.Equal(t, "error", errf["type"])
	assert.Equal(t, "recipient_not_found", errf["code"])

	alice.Send(map[string]any{"type": "ack", "id": "a1", "seq": 0})
	assert.Equal(t, float64(200), alice.Next()["status"])

	alice.Send(map[string]any{"type": "leave", "id": "l1", "session_id": "s1"})
	assert.Equal(t, float64(200), alice.Next()["status"])
	alice.Send(map[string]any{"type": "leave", "id": "l2", "session_id": "s1"})
	assert.Equal(t, float64(404), alice.Next()["status"])

	// bob's event now goes nowhere: alice left.
	r := postJSON(t, n.URL()+"/v1/gateway/events", event("bob", "s1", "anyone?"), nil)
	assert.Equal(t, http.StatusNotFound, r.Status)
}

func TestBadFramesKeepTheConnectionOpen(t *testing.T) {
	n := startNode(t, Config{MaxFrameBytes: 4096})
	c, _ := attach(t, n, "alice", sessionQuery("s1"), nil)
	c.SendRaw([]byte("this is not json"))
	f := c.Next()
	assert.Equal(t, "error", f["type"])
	assert.Equal(t, "invalid_frame", f["code"])
	c.Send(map[string]any{"type": "teleport"})
	f = c.Next()
	assert.Equal(t, "unknown_type", f["code"])
	assert.NotEmpty(t, f["detail"])

	// Still open: a join works.
	c.Send(map[string]any{"type": "join", "id": "j", "session_id": "s2"})
	assert.Equal(t, float64(200), c.Next()["status"])

	// Over the frame limit: close 1009.
	c.SendRaw([]byte(`{"type":"submit","event":{"message":"` + strings.Repeat("x", 5000) + `"}}`))
	assert.Equal(t, websocket.StatusMessageTooBig, c.CloseStatus())
}

func TestBatchPacksFramesIntoOneMessage(t *testing.T) {
	n := startNode(t, Config{})
	c, _ := attach(t, n, "bob", url.Values{"session_id": {"s1"}, "batch": {"1"}}, nil)
	require.NoError(t, c.Conn.Close(websocket.StatusNormalClosure, ""))
	for i := 1; i <= 50; i++ {
		submit(t, n, event("alice", "s1", fmt.Sprint(i)))
	}
	back, _ := attach(t, n, "bob", url.Values{"batch": {"1"}, "resume_from": {"0"}}, nil)
	// The welcome and the 50 waiting events were queued together: at least
	// one message carries several frames.
	assert.Positive(t, back.Buffered(), "the events came batched with the welcome")
	for i := 1; i <= 50; i++ {
		f := back.Next()
		require.Equal(t, uint64(i), seqOf(f))
	}
}

func TestAttachValidation(t *testing.T) {
	n := startNode(t, Config{})
	cases := map[string]struct {
		query url.Values
		field string
	}{
		"no participant":   {url.Values{}, "participant_id"},
		"bad type":         {url.Values{"participant_id": {"a"}, "participant_type": {"robot"}}, "participant_type"},
		"bad resume_from":  {url.Values{"participant_id": {"a"}, "resume_from": {"-1"}}, "resume_from"},
		"long session":     {url.Values{"participant_id": {"a"}, "session_id": {strings.Repeat("s", 257)}}, "session_id"},
		"control in id":    {url.Values{"participant_id": {"a\x01"}}, "participant_id"},
		"empty session id": {url.Values{"participant_id": {"a"}, "session_id": {""}}, "session_id"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, resp, err := dial(n, "", tc.query, nil)
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
		})
	}
}

func TestShutdownClosesWebSocketsWith1001AfterFlushing(t *testing.T) {
	n, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger()})
	require.NoError(t, err)
	n.Start()
	c, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	submit(t, n, event("alice", "s1", "last words"))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, n.Shutdown(ctx))
	}()
	f := c.Next()
	assert.Equal(t, "last words", f["event"].(map[string]any)["message"])
	assert.Equal(t, websocket.StatusGoingAway, c.CloseStatus())
	wg.Wait()

	// Once drained, the node serves no more.
	_, err = http.Get(n.URL() + "/healthz")
	assert.Error(t, err)
}

func TestMaxConnections(t *testing.T) {
	n := startNode(t, Config{MaxConnections: 1})
	attach(t, n, "a", nil, nil)
	_, resp, err := dial(n, "b", nil, nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// TestResumingALargeBacklogIsNotASlowConsumer: the backlog a connection
// starts with does not count against its write queue; only what arrives
// after it attached does. The client reads nothing until a live event has
// been delivered, so its writer is still stuck in the backlog then.
func TestResumingALargeBacklogIsNotASlowConsumer(t *testing.T) {
	const backlog = 2000
	n := startNode(t, Config{WriteQueueBytes: 64 << 10, MailboxSize: 2 * backlog})
	bob, _ := attach(t, n, "bob", sessionQuery("s1"), nil)
	require.NoError(t, bob.Conn.Close(websocket.StatusNormalClosure, ""))
	big := strings.Repeat("y", 1<<10)
	for i := 1; i <= backlog; i++ { // about 2 MiB waiting, 30 times the write queue
		submit(t, n, event("alice", "s1", big))
	}

	q := url.Values{"participant_id": {"bob"}, "resume_from": {"0"}}
	conn, _, err := testkit.Dial(testkit.AttachURL(n.URL(), q),
		&websocket.DialOptions{HTTPClient: testkit.SmallBufferClient(t, 16<<10)})
	require.NoError(t, err)
	back := testkit.NewWS(t, conn)
	submit(t, n, event("alice", "s1", "live"))

	require.Equal(t, "welcome", back.Next()["type"])
	for i := 1; i <= backlog+1; i++ {
		require.Equal(t, uint64(i), seqOf(back.Next()))
	}
}
