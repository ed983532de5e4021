package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-gw/switchyard/internal/tasks"
	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/internal/wire"
	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/ws"
)

// fakePeers is an in-process transport for the node-to-node protocol: each
// peer is a set of answers the test chooses, and every message sent is
// recorded. It holds answers to the same size limits the HTTP transport
// does (an answer past its limit is ErrAnswerTooLarge), so the core's
// handling of a refused answer can be tested without sockets.
type fakePeers struct {
	stateLimit int64 // a release's answer, as --max-handoff-bytes

	mu       sync.Mutex
	peers    map[string]*fakePeer
	sent     []string // "message node participant…", in order
	restored []RestoreRequest
}

// fakePeer answers one node's messages; a nil function answers as a node
// that cannot be reached.
type fakePeer struct {
	deliver func(PeerDelivery) (DeliveryResult, int)
	release func(ParticipantRef) (*ws.ParticipantState, int)
	restore func(RestoreRequest) int
}

var _ Peers = (*fakePeers)(nil)

var errUnreachable = errors.New("fake peer: unreachable")

// fakeDeliverAnswerLimit bounds a delivery's answer, as the HTTP
// transport's limit does.
const fakeDeliverAnswerLimit = 1 << 20

func newFakePeers(stateLimit int64) *fakePeers {
	return &fakePeers{stateLimit: stateLimit, peers: map[string]*fakePeer{}}
}

// peer is node's answers, or nil when node is not a member.
func (f *fakePeers) peer(node, message string, detail ...any) *fakePeer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, strings.TrimSuffix(fmt.Sprintln(append([]any{message, node}, detail...)...), "\n"))
	return f.peers[node]
}

// withinLimit is v's answer when its JSON encoding fits limit.
func withinLimit(v any, limit int64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("fake answer of %d bytes: %w", len(b), ErrAnswerTooLarge)
	}
	return nil
}

func (f *fakePeers) Deliver(_ context.Context, node string, req PeerDelivery, _ int) (DeliverReply, error) {
	p := f.peer(node, "deliver", req.RecipientIDs)
	switch {
	case p == nil:
		return DeliverReply{}, ErrNotMember
	case p.deliver == nil:
		return DeliverReply{}, errUnreachable
	}
	res, status := p.deliver(req)
	if err := withinLimit(res, fakeDeliverAnswerLimit); err != nil {
		return DeliverReply{Status: status}, err
	}
	return DeliverReply{Status: status, Result: res}, nil
}

func (f *fakePeers) Release(_ context.Context, node string, ref ParticipantRef) (ReleaseReply, error) {
	p := f.peer(node, "release", ref.ParticipantID)
	switch {
	case p == nil:
		return ReleaseReply{}, ErrNotMember
	case p.release == nil:
		return ReleaseReply{}, errUnreachable
	}
	st, status := p.release(ref)
	if err := withinLimit(st, f.stateLimit); err != nil {
		return ReleaseReply{Status: status}, err
	}
	return ReleaseReply{Status: status, State: st}, nil
}

func (f *fakePeers) Confirm(_ context.Context, node string, ref ParticipantRef) error {
	if f.peer(node, "confirm", ref.ParticipantID) == nil {
		return ErrNotMember
	}
	return nil
}

func (f *fakePeers) Restore(_ context.Context, node string, req RestoreRequest) (int, error) {
	p := f.peer(node, "restore", req.ParticipantID)
	switch {
	case p == nil:
		return 0, ErrNotMember
	case p.restore == nil:
		return 0, errUnreachable
	}
	f.mu.Lock()
	f.restored = append(f.restored, req)
	f.mu.Unlock()
	return p.restore(req), nil
}

func (f *fakePeers) Takeover(_ context.Context, node string, ref ParticipantRef) (int, error) {
	if f.peer(node, "takeover", ref.ParticipantID) == nil {
		return 0, ErrNotMember
	}
	return 0, errUnreachable
}

func (f *fakePeers) Membership(_ context.Context, node, method, id, _ string, _ int) (MembershipReply, error) {
	if f.peer(node, "membership", method, id) == nil {
		return MembershipReply{}, ErrNotMember
	}
	return MembershipReply{}, errUnreachable
}

func (f *fakePeers) PushDirectory(context.Context, string, []byte, string) error {
	return errUnreachable
}

func (f *fakePeers) FetchDirectory(context.Context, string, []byte) ([]byte, error) {
	return nil, errUnreachable
}

// gatewayWithFakePeers is a single node's gateway, with its own hub and a
// one-node cluster, whose peers are fake: the core under test, the
// transport chosen by the test.
func gatewayWithFakePeers(t *testing.T) (*Gateway, *fakePeers) {
	t.Helper()
	const stateLimit = 4 << 10
	fake := newFakePeers(stateLimit)
	hub := ws.NewHub(ws.Config{Node: "node-1", Logger: testkit.Logger()})
	timers := tasks.New()
	t.Cleanup(func() {
		require.NoError(t, timers.Close(context.Background()))
		require.NoError(t, hub.Shutdown(context.Background()))
	})
	g := NewGateway(Config{
		Self:           "node-1",
		Limits:         wire.Limits{MaxMessageBytes: 1 << 10, MaxMetadataKeys: 50},
		Hub:            hub,
		Cluster:        membership.NewLocal("node-1", "http://127.0.0.1:1"),
		Peers:          fake,
		ForwardTimeout: 5 * time.Second,
		Externals:      ExternalLimits{Max: 10, PerCredential: 10, Sessions: 10, TTL: time.Hour, FailureLimit: 3, RetryAfter: time.Minute},
		StateLimit:     stateLimit,
		Tasks:          timers,
		Metrics:        newTestMetrics(),
		Logger:         testkit.Logger(),
	})
	return g, fake
}

// TestDispatchReportsTheRecipientsOfAFailedPeer: an event for recipients on
// two peers, one of which cannot be reached: the other's recipients count,
// the unreachable one's are reported failed, each peer got one delivery
// with its own recipients.
func TestDispatchReportsTheRecipientsOfAFailedPeer(t *testing.T) {
	g, fake := gatewayWithFakePeers(t)
	var got PeerDelivery
	fake.peers["node-a"] = &fakePeer{deliver: func(req PeerDelivery) (DeliveryResult, int) {
		got = req
		return DeliveryResult{Status: "ok", Recipients: 1, deliveryCounts: deliveryCounts{Live: 1}}, http.StatusOK
	}}
	fake.peers["node-b"] = &fakePeer{} // unreachable

	ev := wire.Event{EventID: "e1", SessionID: "s1", SenderID: "alice", Message: "hi"}
	r := route{peers: map[string][]string{"node-a": {"ann"}, "node-b": {"bea", "ben"}}}
	out, err := g.dispatch(t.Context(), r, ev, json.RawMessage(`{"event_id":"e1"}`), 0)

	require.NoError(t, err)
	assert.Equal(t, deliveryCounts{Live: 1}, out.counts)
	assert.ElementsMatch(t, []string{"bea", "ben"}, out.failed)
	assert.Equal(t, []string{"ann"}, got.RecipientIDs)
	assert.Equal(t, "s1", got.SessionID)
	assert.JSONEq(t, `{"event_id":"e1"}`, string(got.Event))
}

// TestDispatchToAPeerThatIsNoMemberFails: a peer gone from the cluster
// between lookup and delivery cannot be reached: its recipients fail.
func TestDispatchToAPeerThatIsNoMemberFails(t *testing.T) {
	g, _ := gatewayWithFakePeers(t)
	r := route{peers: map[string][]string{"gone": {"gil"}}}
	out, err := g.dispatch(t.Context(), r, wire.Event{EventID: "e1", SessionID: "s1"}, json.RawMessage(`{}`), 0)
	require.NoError(t, err)
	assert.Equal(t, []string{"gil"}, out.failed)
	assert.Zero(t, out.counts.total())
}

// TestATakeoverWhoseReleaseIsTooLargeGivesTheParticipantBack: the old
// home's release answer is past the hand-off limit, so it is refused as a
// failed transfer: the participant goes back to the old home (a restore
// from this node), the attaching client is told to retry, and this node
// does not start the participant afresh.
func TestATakeoverWhoseReleaseIsTooLargeGivesTheParticipantBack(t *testing.T) {
	g, fake := gatewayWithFakePeers(t)
	big := make([]ws.EventState, 0, 64)
	for i := range 64 {
		big = append(big, ws.EventState{ID: fmt.Sprint("event-", i), Tail: make([]byte, 256)})
	}
	fake.peers["old"] = &fakePeer{
		release: func(ref ParticipantRef) (*ws.ParticipantState, int) {
			return &ws.ParticipantState{ID: ref.ParticipantID, Type: "ai", Events: big}, http.StatusOK
		},
		restore: func(RestoreRequest) int { return http.StatusOK },
	}

	err := g.Takeover(t.Context(), "bob", "ai", []string{"s1"}, []string{"old"}, true)

	require.ErrorIs(t, err, ErrMoving)
	require.Len(t, fake.restored, 1)
	assert.Equal(t, "bob", fake.restored[0].ParticipantID)
	assert.Equal(t, g.self, fake.restored[0].From)
	assert.Nil(t, g.hub.Lookup("bob"), "not started afresh here")
	assert.Equal(t, "old", g.moved.lookup("bob", g.now()), "what reaches this node for bob goes to the old home")
	assert.NotContains(t, fake.sent, "confirm old bob")
}

// TestATakeoverWithinTheLimitInstallsAndConfirms: the same takeover with a
// state that fits is installed here and confirmed to the old home.
func TestATakeoverWithinTheLimitInstallsAndConfirms(t *testing.T) {
	g, fake := gatewayWithFakePeers(t)
	fake.peers["old"] = &fakePeer{release: func(ref ParticipantRef) (*ws.ParticipantState, int) {
		return &ws.ParticipantState{ID: ref.ParticipantID, Type: "ai", Sessions: []string{"s1"}}, http.StatusOK
	}}

	require.NoError(t, g.Takeover(t.Context(), "bob", "ai", []string{"s1"}, []string{"old"}, true))

	p := g.hub.Lookup("bob")
	require.NotNil(t, p)
	assert.True(t, p.InSession("s1"))
	assert.Equal(t, []string{"release old bob", "confirm old bob"}, fake.sent)
	assert.Empty(t, fake.restored)
}

// lookupHook is the one-node directory with something happening while a
// session lookup is in flight: between a submit's first look at this
// node's participants and the directory's answer.
type lookupHook struct {
	membership.Cluster
	during func()
}

func (c lookupHook) Session(ctx context.Context, session, except string) ([]membership.Entry, error) {
	c.during()
	return c.Cluster.Session(ctx, session, except)
}

// TestAParticipantArrivingDuringTheLookupGetsTheEvent: bob comes to this
// node (a takeover prepares him here) while a submit's directory lookup is
// in flight. The directory leaves out this node's participants and the
// first look did not find him here yet: the submit must still reach him,
// not answer 404 (or, with others in the session, 200 without him, as a
// drain test once did).
func TestAParticipantArrivingDuringTheLookupGetsTheEvent(t *testing.T) {
	g, _ := gatewayWithFakePeers(t)
	g.cluster = lookupHook{Cluster: g.cluster, during: func() {
		require.NoError(t, g.hub.Join("bob", "ai", "s1"))
	}}

	res, err := g.Submit(t.Context(), wire.Event{SenderID: "alice", SenderType: "ai", EventType: "message",
		SessionID: "s1", Message: "while bob arrives"})

	require.NoError(t, err)
	assert.Equal(t, 1, res.Recipients)
	assert.Equal(t, 1, res.Queued)
}

// TestUnionParticipantsKeepsTheSharedSlice: the second look usually finds
// what the first did, and the hub's shared slice is used as it is.
func TestUnionParticipantsKeepsTheSharedSlice(t *testing.T) {
	hub := ws.NewHub(ws.Config{Node: "node-1", Logger: testkit.Logger()})
	t.Cleanup(func() { require.NoError(t, hub.Shutdown(context.Background())) })
	for _, id := range []string{"ann", "bob", "cat"} {
		require.NoError(t, hub.Join(id, "ai", "s1"))
	}
	shared := hub.SessionMembers("s1")
	assert.Same(t, &shared[0], &unionParticipants(shared, hub.SessionMembers("s1"))[0], "the same look is returned as is")

	assert.Equal(t, shared, unionParticipants(shared[:2:2], shared), "the missing one is added")
	assert.Equal(t, shared[:1], unionParticipants(shared[:1], nil))
}
