package ws

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// testEvent makes an event whose body carries n, accepted at at.
func testEvent(n int, at time.Time) *Event {
	return NewEvent(fmt.Sprintf("ev-%d", n), "s1", json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)), at)
}

// sizedEvent makes an event whose body is about size bytes.
func sizedEvent(n, size int, at time.Time) *Event {
	pad := strings.Repeat("x", size)
	return NewEvent(fmt.Sprintf("ev-%d", n), "s1", json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, n, pad)), at)
}

// checkInvariants verifies what must hold of any mailbox: the held seqs are
// contiguous from oldest to newest, the running byte totals add up, and
// cumBefore agrees with them.
func checkInvariants(t *testing.T, m *mailbox) {
	t.Helper()
	require.LessOrEqual(t, m.n, m.max, "more entries than max")
	require.LessOrEqual(t, m.n, len(m.ring), "more entries than ring slots")
	require.LessOrEqual(t, len(m.ring), m.max, "ring grew past max")
	require.Equal(t, m.newest()-m.oldest()+1, uint64(m.n), "held seqs are oldest..newest")
	if m.n == 0 {
		require.Equal(t, m.nextSeq, m.oldest())
		require.Equal(t, m.total, m.cumBefore(m.nextSeq))
		return
	}
	require.Equal(t, m.total, m.at(m.newest()).cum, "the newest entry's cum is the total")
	for s := m.oldest(); s <= m.newest(); s++ {
		e := m.at(s)
		require.Equal(t, s, e.seq, "at(%d)", s)
		require.NotNil(t, e.ev)
		require.Equal(t, e.cum, m.cumBefore(s)+uint64(e.ev.frameSize(s)), "cumBefore(%d) + frameSize", s)
	}
	// Before oldest, cumBefore clamps to the oldest; after newest it is the total.
	require.Equal(t, m.cumBefore(m.oldest()), m.cumBefore(0))
	require.Equal(t, m.total, m.cumBefore(m.newest()+1))
}

func seqsOf(es []entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestMailboxEmpty(t *testing.T) {
	m := newMailbox(8)
	assert.Equal(t, uint64(0), m.newest())
	assert.Equal(t, uint64(1), m.oldest())
	assert.Equal(t, 0, len(m.ring), "an idle mailbox allocates nothing")
	assert.Empty(t, m.copyFrom(1, nil, 1<<20))
	assert.Equal(t, 0, m.trimThrough(100))
	assert.Equal(t, 0, m.expire(t0.Add(time.Hour)))
	assert.Equal(t, uint64(0), m.cumBefore(1))
	checkInvariants(t, &m)
}

func TestMailboxSeqsStartAtOneAndIncrease(t *testing.T) {
	m := newMailbox(100)
	for i := 1; i <= 50; i++ {
		seq, evicted := m.append(testEvent(i, t0))
		require.Equal(t, uint64(i), seq)
		require.Zero(t, evicted)
		require.Equal(t, uint64(i), m.newest())
		require.Equal(t, uint64(1), m.oldest())
	}
	checkInvariants(t, &m)
}

func TestMailboxGrowsUpToMax(t *testing.T) {
	const max = 37 // not a power of two: the last growth is capped
	m := newMailbox(max)
	prevLen := 0
	for i := 1; i <= max; i++ {
		m.append(testEvent(i, t0))
		require.Equal(t, i, m.n)
		require.GreaterOrEqual(t, len(m.ring), prevLen, "the ring never shrinks while growing")
		require.LessOrEqual(t, len(m.ring), max)
		prevLen = len(m.ring)
		checkInvariants(t, &m)
	}
	assert.Equal(t, max, len(m.ring), "a full mailbox has exactly max slots")
	// The entries survived each growth in order.
	assert.Equal(t, seqRange(1, max), seqsOf(m.copyFrom(1, nil, 1<<30)))
}

func TestMailboxGrowthIsLazy(t *testing.T) {
	m := newMailbox(1024)
	m.append(testEvent(1, t0))
	assert.Less(t, len(m.ring), 1024, "one event must not allocate the whole mailbox")
}

func TestMailboxEvictsOldestWhenFull(t *testing.T) {
	const max = 5
	m := newMailbox(max)
	for i := 1; i <= max; i++ {
		_, evicted := m.append(testEvent(i, t0))
		require.Zero(t, evicted)
	}
	for i := max + 1; i <= 3*max; i++ {
		seq, evicted := m.append(testEvent(i, t0))
		require.Equal(t, uint64(i), seq)
		require.Equal(t, 1, evicted, "a full mailbox drops exactly one entry per append")
		require.Equal(t, max, m.n)
		require.Equal(t, uint64(i), m.newest())
		require.Equal(t, uint64(i-max+1), m.oldest())
		checkInvariants(t, &m)
	}
	got := m.copyFrom(1, nil, 1<<30)
	assert.Equal(t, seqRange(2*max+1, 3*max), seqsOf(got))
	for _, e := range got {
		assert.Equal(t, fmt.Sprintf("ev-%d", e.seq), e.ev.ID, "the entry for a seq holds its own event")
	}
}

func TestMailboxExpire(t *testing.T) {
	m := newMailbox(16)
	for i := 1; i <= 10; i++ {
		m.append(testEvent(i, t0.Add(time.Duration(i)*time.Second)))
	}
	// Entries accepted strictly before the cutoff go.
	assert.Equal(t, 0, m.expire(t0.Add(time.Second)), "an entry at the cutoff stays")
	assert.Equal(t, 4, m.expire(t0.Add(5*time.Second)))
	assert.Equal(t, uint64(5), m.oldest())
	assert.Equal(t, uint64(10), m.newest())
	checkInvariants(t, &m)
	assert.NotNil(t, m.ring, "a non-empty mailbox keeps its ring")

	assert.Equal(t, 6, m.expire(t0.Add(time.Hour)))
	assert.Equal(t, 0, m.n)
	assert.Nil(t, m.ring, "an emptied mailbox gives its memory back")
	assert.Equal(t, uint64(10), m.newest(), "seqs are not reused after expiry")
	assert.Equal(t, uint64(11), m.oldest())
	checkInvariants(t, &m)

	// It grows again from nothing and numbering continues.
	seq, _ := m.append(testEvent(11, t0.Add(2*time.Hour)))
	assert.Equal(t, uint64(11), seq)
	assert.Equal(t, uint64(11), m.oldest())
	checkInvariants(t, &m)
}

func TestMailboxTrimThrough(t *testing.T) {
	m := newMailbox(16)
	for i := 1; i <= 10; i++ {
		m.append(testEvent(i, t0))
	}
	assert.Equal(t, 0, m.trimThrough(0))
	assert.Equal(t, 3, m.trimThrough(3))
	assert.Equal(t, uint64(4), m.oldest())
	assert.Equal(t, 0, m.trimThrough(2), "trimming below oldest does nothing")
	checkInvariants(t, &m)
	assert.Equal(t, 7, m.trimThrough(100))
	assert.Equal(t, 0, m.n)
	assert.Equal(t, uint64(11), m.oldest())
	checkInvariants(t, &m)
	seq, _ := m.append(testEvent(11, t0))
	assert.Equal(t, uint64(11), seq)
	checkInvariants(t, &m)
}

func TestMailboxCopyFrom(t *testing.T) {
	m := newMailbox(32)
	for i := 1; i <= 10; i++ {
		m.append(sizedEvent(i, 100, t0))
	}
	size := m.at(1).ev.frameSize(1) // every frame here has the same size (seqs 1..9) or one more (10)

	t.Run("all", func(t *testing.T) {
		assert.Equal(t, seqRange(1, 10), seqsOf(m.copyFrom(1, nil, 1<<20)))
		assert.Equal(t, seqRange(4, 10), seqsOf(m.copyFrom(4, nil, 1<<20)))
		assert.Empty(t, m.copyFrom(11, nil, 1<<20), "nothing after newest")
	})
	t.Run("appends to dst", func(t *testing.T) {
		dst := []entry{{seq: 99}}
		got := m.copyFrom(9, dst, 1<<20)
		assert.Equal(t, []uint64{99, 9, 10}, seqsOf(got))
	})
	t.Run("at least one entry even when larger than maxBytes", func(t *testing.T) {
		assert.Equal(t, []uint64{3}, seqsOf(m.copyFrom(3, nil, 1)))
		assert.Equal(t, []uint64{3}, seqsOf(m.copyFrom(3, nil, 0)))
	})
	t.Run("stops at the byte bound", func(t *testing.T) {
		assert.Equal(t, []uint64{1, 2, 3}, seqsOf(m.copyFrom(1, nil, 3*size)), "exactly three frames fit")
		assert.Equal(t, []uint64{1, 2, 3}, seqsOf(m.copyFrom(1, nil, 4*size-1)), "the fourth does not fit")
		assert.Equal(t, []uint64{1, 2, 3, 4}, seqsOf(m.copyFrom(1, nil, 4*size)))
		// The copied frames never exceed the bound (beyond the first one).
		for max := 1; max < 12*size; max += 7 {
			got := m.copyFrom(1, nil, max)
			require.NotEmpty(t, got)
			total := 0
			for _, e := range got {
				total += e.ev.frameSize(e.seq)
			}
			if len(got) > 1 {
				require.LessOrEqual(t, total, max)
			}
			if len(got) < 10 { // it stopped because the next one did not fit
				next := m.at(got[len(got)-1].seq + 1)
				require.Greater(t, total+next.ev.frameSize(next.seq), max)
			}
		}
	})
	t.Run("starting before oldest clamps", func(t *testing.T) {
		m := newMailbox(4)
		for i := 1; i <= 10; i++ {
			m.append(testEvent(i, t0))
		}
		assert.Equal(t, seqRange(7, 10), seqsOf(m.copyFrom(1, nil, 1<<20)))
		assert.Equal(t, seqRange(7, 10), seqsOf(m.copyFrom(0, nil, 1<<20)))
		assert.Equal(t, []uint64{7}, seqsOf(m.copyFrom(2, nil, 1)))
	})
}

func TestMailboxCumBefore(t *testing.T) {
	m := newMailbox(8)
	var want uint64
	sizes := map[uint64]uint64{}
	for i := 1; i <= 20; i++ {
		ev := sizedEvent(i, i*13, t0) // sizes differ per event
		seq, _ := m.append(ev)
		sizes[seq] = uint64(ev.frameSize(seq))
		want += sizes[seq]
		require.Equal(t, want, m.total)
		checkInvariants(t, &m)
	}
	// cumBefore(oldest) is the total minus everything held.
	var held uint64
	for s := m.oldest(); s <= m.newest(); s++ {
		held += sizes[s]
	}
	assert.Equal(t, m.total-held, m.cumBefore(m.oldest()))
	// The backlog from any held seq is the sum of the frames from it on.
	for s := m.oldest(); s <= m.newest(); s++ {
		var rest uint64
		for r := s; r <= m.newest(); r++ {
			rest += sizes[r]
		}
		assert.Equal(t, rest, m.total-m.cumBefore(s), "backlog from %d", s)
	}
}

// TestMailboxWrapAround drives the ring through many appends, evictions,
// trims and expiries so that head wraps many times, checking against a
// plain slice model.
func TestMailboxWrapAround(t *testing.T) {
	const max = 7
	m := newMailbox(max)
	var model []uint64 // seqs held, oldest first
	next := uint64(1)
	now := t0
	for i := 0; i < 5000; i++ {
		now = now.Add(time.Millisecond)
		switch {
		case i%97 == 96:
			// Expire everything older than 3ms.
			cutoff := now.Add(-3 * time.Millisecond)
			n := 0
			for len(model) > 0 && t0.Add(time.Duration(model[0])*time.Millisecond).Before(cutoff) {
				model = model[1:]
				n++
			}
			require.Equal(t, n, m.expire(cutoff), "step %d", i)
		case i%31 == 30 && len(model) > 0:
			through := model[len(model)/2]
			n := 0
			for len(model) > 0 && model[0] <= through {
				model = model[1:]
				n++
			}
			require.Equal(t, n, m.trimThrough(through), "step %d", i)
		default:
			// The event's At is derived from its seq so the expiry model can see it.
			seq, evicted := m.append(testEvent(int(next), t0.Add(time.Duration(next)*time.Millisecond)))
			require.Equal(t, next, seq)
			model = append(model, next)
			next++
			wantEvicted := 0
			if len(model) > max {
				model = model[1:]
				wantEvicted = 1
			}
			require.Equal(t, wantEvicted, evicted, "step %d", i)
		}
		require.Equal(t, next-1, m.newest())
		if len(model) == 0 {
			require.Equal(t, 0, m.n)
		} else {
			require.Equal(t, model[0], m.oldest(), "step %d", i)
			got := m.copyFrom(0, nil, 1<<30)
			require.Equal(t, model, seqsOf(got), "step %d", i)
			for _, e := range got {
				require.Equal(t, "ev-"+strconv.FormatUint(e.seq, 10), e.ev.ID)
			}
		}
		checkInvariants(t, &m)
	}
	require.Greater(t, next, uint64(10*max), "the ring wrapped many times")
}

func TestEventAppendFrame(t *testing.T) {
	body := json.RawMessage(`{"sender_id":"a","message":"hé \"quoted\" <b>","n":[1,2]}`)
	for _, tc := range []struct {
		name    string
		eventID string
		session string
	}{
		{"with session", "e-1", "s-1"},
		{"without session", "e-2", ""},
		{"characters needing escapes", "e\"\\\n\u2028<>&", "s\"\t/\x01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := NewEvent(tc.eventID, tc.session, body, t0)
			assert.Equal(t, tc.eventID, ev.ID)
			assert.Equal(t, t0, ev.At)
			for _, seq := range []uint64{1, 9, 10, 99999, 1 << 63, ^uint64(0)} {
				frame := ev.appendFrame(nil, seq)
				require.Equal(t, ev.frameSize(seq), len(frame), "frameSize(%d)", seq)
				require.True(t, json.Valid(frame), "frame is not valid JSON: %s", frame)

				var f map[string]json.RawMessage
				require.NoError(t, json.Unmarshal(frame, &f))
				var typ, id string
				require.NoError(t, json.Unmarshal(f["type"], &typ))
				assert.Equal(t, "event", typ)
				var gotSeq uint64
				require.NoError(t, json.Unmarshal(f["seq"], &gotSeq))
				assert.Equal(t, seq, gotSeq)
				require.NoError(t, json.Unmarshal(f["event_id"], &id))
				assert.Equal(t, tc.eventID, id)
				if tc.session == "" {
					_, has := f["session_id"]
					assert.False(t, has, "session_id is omitted when empty: %s", frame)
				} else {
					var s string
					require.NoError(t, json.Unmarshal(f["session_id"], &s))
					assert.Equal(t, tc.session, s)
				}
				assert.JSONEq(t, string(body), string(f["event"]))
				assert.Len(t, f, map[bool]int{true: 4, false: 5}[tc.session == ""], "no other fields: %s", frame)
			}
		})
	}
	t.Run("appends to dst", func(t *testing.T) {
		ev := NewEvent("e", "s", json.RawMessage(`{}`), t0)
		dst := []byte("prefix\n")
		out := ev.appendFrame(dst, 5)
		assert.Equal(t, "prefix\n", string(out[:7]))
		assert.JSONEq(t, `{"type":"event","seq":5,"event_id":"e","session_id":"s","event":{}}`, string(out[7:]))
	})
	t.Run("the same event for two seqs", func(t *testing.T) {
		ev := NewEvent("e", "s", json.RawMessage(`{"a":1}`), t0)
		a := string(ev.appendFrame(nil, 1))
		b := string(ev.appendFrame(nil, 2))
		assert.Equal(t, strings.Replace(a, `"seq":1`, `"seq":2`, 1), b, "only the seq differs")
	})
}

func TestDecimalLen(t *testing.T) {
	for _, v := range []uint64{0, 1, 9, 10, 11, 99, 100, 99999, 100000, 1 << 32, 1 << 63, ^uint64(0)} {
		assert.Equal(t, len(strconv.FormatUint(v, 10)), decimalLen(v), "decimalLen(%d)", v)
	}
}
