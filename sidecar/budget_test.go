package sidecar

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The node-wide mailbox byte budget (--max-mailbox-bytes): new events are
// refused once the mailboxes hold it; what was accepted stays.

const testBudget = 1 << 20

// bigEvent is an event of about 100 KB for session s, with an event_id.
func bigEvent(id string) map[string]any {
	ev := event("src", "s", strings.Repeat("x", 100<<10))
	ev["event_id"] = id
	return ev
}

// addOffline makes participants of session s on n, offline.
func addOffline(t *testing.T, n *Node, ids ...string) {
	t.Helper()
	for _, id := range ids {
		r := do(t, http.MethodPut, n.URL()+"/v1/gateway/sessions/s/participants/"+id, nil, nil)
		require.Equal(t, http.StatusOK, r.Status, "PUT %s: %s", id, r.Raw)
	}
}

// fillMailboxes submits big events to n until it refuses one; it returns
// the accepted event ids and the refusal.
func fillMailboxes(t *testing.T, n *Node, ev func(i int) map[string]any) ([]string, apiResponse) {
	t.Helper()
	var accepted []string
	for i := range 100 {
		r := postJSON(t, n.URL()+"/v1/gateway/events", ev(i), nil)
		if r.Status != http.StatusOK {
			return accepted, r
		}
		accepted = append(accepted, r.Body["event_id"].(string))
	}
	t.Fatal("the node never refused an event")
	return nil, apiResponse{}
}

func requireBudgetRefusal(t *testing.T, r apiResponse) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "answer: %s", r.Raw)
	assert.Equal(t, "error", r.Body["status"])
	assert.Equal(t, "mailbox_budget_exhausted", r.Body["code"])
	assert.NotEmpty(t, r.Body["detail"])
	assert.Equal(t, "5", r.Header.Get("Retry-After"))
}

func TestMailboxBudgetRefusesNewEventsAndKeepsAccepted(t *testing.T) {
	n := startNode(t, Config{MaxMailboxBytes: testBudget})
	ids := []string{"p1", "p2", "p3"}
	addOffline(t, n, ids...)

	accepted, refused := fillMailboxes(t, n, func(i int) map[string]any { return bigEvent(fmt.Sprint("ev-", i)) })
	requireBudgetRefusal(t, refused)
	// Each event is shared by the three mailboxes and counted once: ten
	// 100 KB events fit in 1 MiB (counted per mailbox, three would).
	require.Len(t, accepted, 10)

	held := metricValue(t, n, "switchyard_mailbox_bytes")
	assert.LessOrEqual(t, held, float64(testBudget))
	assert.Greater(t, held, float64(10*100<<10))
	assert.Equal(t, float64(testBudget), metricValue(t, n, "switchyard_mailbox_bytes_limit"))
	assert.Equal(t, float64(1), metricValue(t, n, "switchyard_mailbox_budget_refusals_total"))
	assert.Equal(t, float64(1), metricValue(t, n, `switchyard_submits_total{outcome="mailbox_budget_exhausted"}`))

	// Nothing accepted was dropped, and the refused event reached nobody:
	// each participant comes back to exactly the accepted events.
	clients := map[string]*client{}
	for _, id := range ids {
		c, welcome := attach(t, n, id, nil, nil)
		require.Equal(t, uint64(len(accepted)), seqOf(welcome), "%s: the newest seq is the last accepted event", id)
		for i, want := range accepted {
			f := c.Next()
			require.Equal(t, "event", f["type"], "%s: %v", id, f)
			require.Equal(t, uint64(i+1), seqOf(f))
			require.Equal(t, want, f["event_id"])
		}
		clients[id] = c
	}

	// Once the participants acknowledge what they read, there is room: the
	// refused event is accepted on retry with the same event_id.
	for _, c := range clients {
		c.Send(map[string]any{"type": "ack", "seq": len(accepted)})
	}
	require.Eventually(t, func() bool { return n.hub.MailboxBytes() < testBudget/10 },
		10*time.Second, 5*time.Millisecond, "the acknowledged events were not given back")
	retry := postJSON(t, n.URL()+"/v1/gateway/events", bigEvent(fmt.Sprint("ev-", len(accepted))), nil)
	require.Equal(t, http.StatusOK, retry.Status, "answer: %s", retry.Raw)
	assert.Equal(t, float64(3), retry.Body["live"])
	for id, c := range clients {
		f := c.Next()
		assert.Equal(t, uint64(len(accepted)+1), seqOf(f), id)
		assert.Equal(t, fmt.Sprint("ev-", len(accepted)), f["event_id"], id)
	}
}

// TestMailboxBudgetFreedByExpiry: events that expire from the mailboxes
// make room again, the participants still offline.
func TestMailboxBudgetFreedByExpiry(t *testing.T) {
	n := startNode(t, Config{MaxMailboxBytes: testBudget, MailboxTTL: time.Second})
	addOffline(t, n, "p1")
	_, refused := fillMailboxes(t, n, func(i int) map[string]any { return bigEvent(fmt.Sprint("ev-", i)) })
	requireBudgetRefusal(t, refused)

	require.Eventually(t, func() bool { return n.hub.MailboxBytes() == 0 },
		20*time.Second, 10*time.Millisecond, "the expired events were not given back")
	submit(t, n, bigEvent("after-expiry"))
	require.NotNil(t, n.hub.Lookup("p1"), "p1 is still within its offline window")
}

// TestMailboxBudgetOnThePeerFailsItsRecipients: a submit on node 1 for
// participants on node 2, whose mailboxes are full, answers 502 naming
// them; node 1's own recipients get the event.
func TestMailboxBudgetOnThePeerFailsItsRecipients(t *testing.T) {
	nodes := startCluster(t, 2, Config{MaxMailboxBytes: testBudget})
	near, _ := attach(t, nodes[0], "near", sessionQuery("s"), nil)
	addOffline(t, nodes[1], "far")
	require.Eventually(t, func() bool { return len(dirSession(nodes[0], "s")) == 2 },
		5*time.Second, 5*time.Millisecond, "node 1 learns of far")

	// Fill node 2 with direct messages to far.
	_, refused := fillMailboxes(t, nodes[1], func(i int) map[string]any {
		ev := bigEvent(fmt.Sprint("fill-", i))
		ev["recipient_id"] = "far"
		return ev
	})
	requireBudgetRefusal(t, refused)

	// An event as big as the one refused: node 2 has no room for it either.
	r := postJSON(t, nodes[0].URL()+"/v1/gateway/events", bigEvent("to-both"), nil)
	require.Equal(t, http.StatusBadGateway, r.Status, "answer: %s", r.Raw)
	assert.Equal(t, "recipients_unreachable", r.Body["code"])
	assert.Equal(t, []any{"far"}, r.Body["failed"])
	assert.Equal(t, "to-both", r.Body["event_id"])
	f := near.Next()
	assert.Equal(t, r.Body["event_id"], f["event_id"], "node 1's own recipient got it")
	assert.Equal(t, float64(2), metricValue(t, nodes[1], "switchyard_mailbox_budget_refusals_total"),
		"node 2 refused the fill and the delivery from node 1")
}

// TestOpenAPIMailboxBudgetAnswers: the 503 of a submit and of a delivery
// to a node whose mailboxes are full match docs/openapi.yaml.
func TestOpenAPIMailboxBudgetAnswers(t *testing.T) {
	s := newOASuite(t)
	auth := bearerHeader("k")
	n := startNode(t, Config{MaxMailboxBytes: testBudget, APIKeys: []string{"k"}})
	require.NoError(t, n.gw.Join("p1", "ai", "s"))
	events := n.URL() + "/v1/gateway/events"
	for i := range 100 {
		if r := postJSON(t, events, bigEvent(fmt.Sprint("ev-", i)), auth); r.Status != http.StatusOK {
			requireBudgetRefusal(t, r)
			break
		}
	}
	requireBudgetRefusal(t, s.post(t, http.StatusServiceUnavailable, docAccepts, events, bigEvent("again"), auth))
	delivery := map[string]any{"recipient_id": "p1", "session_id": "s", "event": bigEvent("delivered")}
	requireBudgetRefusal(t, s.post(t, http.StatusServiceUnavailable, docAccepts, n.URL()+"/v1/gateway/deliveries", delivery, auth))
}
