package ws

import (
	"encoding/json"
	"hash/fnv"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/switchyard-gw/switchyard/internal/jsonw"
)

// Event is one accepted event as this node stores and sends it. It is encoded
// once, when it is accepted, and the same bytes are shared by every
// recipient's mailbox on this node; only the per-recipient seq is written
// around them when a frame goes out.
type Event struct {
	ID string    // the event_id
	At time.Time // when this node accepted it; the mailbox TTL counts from here

	tail []byte // `"event_id":…,"session_id":…,"event":{…}}`
	// key identifies (sender_id, event_id) for idempotent retries; 0: none.
	// FNV-1a, so that it is the same on every node.
	key uint64
	// freshID: this node assigned the event_id for this very submit, so no
	// mailbox can have taken it before; it is recorded without a lookup.
	freshID bool
	// refs counts the holders of this event on its node (mailbox entries,
	// buffered deliveries, a reservation): its bytes are counted against
	// the mailbox budget while any holds it (budget.go). An Event belongs to
	// one Hub.
	refs atomic.Int32
}

// WithSender sets the sender whose (sender_id, event_id) pair makes a retry
// of this event recognisable: a participant's mailbox takes it only once
// within the dedupe window. It returns e.
func (e *Event) WithSender(senderID string) *Event {
	e.key = dedupeKey(senderID, e.ID)
	return e
}

// WithFreshID marks e's event_id as assigned by this node for this submit
// (the client sent none): mailboxes record its key for later retries but
// need not look it up. It returns e.
func (e *Event) WithFreshID() *Event {
	e.freshID = true
	return e
}

func dedupeKey(senderID, eventID string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(senderID))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(eventID))
	if k := h.Sum64(); k != 0 {
		return k
	}
	return 1 // 0 means "no key"
}

const eventFramePrefix = `{"type":"event","seq":`

// NewEvent encodes the shared part of an event frame. body is the event
// object as JSON; sessionID may be empty.
func NewEvent(eventID, sessionID string, body json.RawMessage, at time.Time) *Event {
	return NewTracedEvent(eventID, sessionID, "", body, at)
}

// NewTracedEvent is NewEvent with a W3C traceparent in the frame's envelope,
// so one event can be followed from its submit to its delivery.
func NewTracedEvent(eventID, sessionID, traceparent string, body json.RawMessage, at time.Time) *Event {
	tail := make([]byte, 0, len(body)+len(eventID)+len(sessionID)+len(traceparent)+64)
	tail = append(tail, `"event_id":`...)
	tail = jsonw.AppendString(tail, eventID)
	if traceparent != "" {
		tail = append(tail, `,"traceparent":`...)
		tail = jsonw.AppendString(tail, traceparent)
	}
	if sessionID != "" {
		tail = append(tail, `,"session_id":`...)
		tail = jsonw.AppendString(tail, sessionID)
	}
	tail = append(tail, `,"event":`...)
	tail = append(tail, body...)
	tail = append(tail, '}')
	return &Event{ID: eventID, At: at, tail: tail}
}

// frameSize is the length of the event frame for seq.
func (e *Event) frameSize(seq uint64) int {
	return len(eventFramePrefix) + decimalLen(seq) + 1 + len(e.tail)
}

// appendFrame writes the event frame for seq to dst.
func (e *Event) appendFrame(dst []byte, seq uint64) []byte {
	dst = append(dst, eventFramePrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ',')
	return append(dst, e.tail...)
}

func decimalLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// Server-to-client control frames. Event frames are built by appendFrame.

type welcomeFrame struct {
	Type          string   `json:"type"`
	ParticipantID string   `json:"participant_id"`
	Node          string   `json:"node"`
	Sessions      []string `json:"sessions"`
	Seq           uint64   `json:"seq"`
	Resumed       bool     `json:"resumed"`
}

type gapFrame struct {
	Type    string `json:"type"`
	FromSeq uint64 `json:"from_seq"`
	ToSeq   uint64 `json:"to_seq"`
}

type resultFrame struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

type errorFrame struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("ws: encoding a control frame: " + err.Error())
	}
	return b
}

// clientFrame is any frame a client sends; Type says which fields matter.
type clientFrame struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	SessionID string          `json:"session_id"`
	Event     json.RawMessage `json:"event"`
	Seq       *uint64         `json:"seq"`
}
