package ws

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// Helpers of the wire tests.

// wireRecorder sees what the hub writes to the sockets it hijacks: it wraps
// the server's ResponseWriter (testHub.wrap) so that the hijacked net.Conn
// the hub writes its data frames to records every Write call, and it notes
// how many bytes the HTTP server had read past each upgrade request.
type wireRecorder struct {
	mu       sync.Mutex
	writes   [][]byte // every Write to a hijacked socket, in order
	buffered []int    // bytes buffered past the upgrade request, per hijack
}

func (r *wireRecorder) option(th *testHub) { th.wrap = r.wrap }

func (r *wireRecorder) wrap(w http.ResponseWriter) http.ResponseWriter {
	return &recordingWriter{ResponseWriter: w, rec: r}
}

// writesSince returns a copy of the writes recorded from index i on.
func (r *wireRecorder) writesSince(i int) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.writes[i:]...)
}

func (r *wireRecorder) writeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

func (r *wireRecorder) bufferedAtHijack() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.buffered...)
}

type recordingWriter struct {
	http.ResponseWriter
	rec *wireRecorder
}

func (w *recordingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.rec.mu.Lock()
	w.rec.buffered = append(w.rec.buffered, brw.Reader.Buffered())
	w.rec.mu.Unlock()
	return &recordingConn{Conn: c, rec: w.rec}, brw, nil
}

type recordingConn struct {
	net.Conn
	rec *wireRecorder
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.rec.mu.Lock()
	c.rec.writes = append(c.rec.writes, bytes.Clone(b))
	c.rec.mu.Unlock()
	return c.Conn.Write(b)
}

// wireFrame is one WebSocket frame as a server sent it.
type wireFrame struct {
	fin     bool
	opcode  byte
	header  []byte
	payload []byte
}

// readWireFrame reads one server frame from r, strictly: servers do not
// mask (RFC 6455 5.1) and the length uses the minimal encoding (5.2).
func readWireFrame(r io.Reader) (wireFrame, error) {
	var f wireFrame
	hdr := make([]byte, 2, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return f, err
	}
	if hdr[1]&0x80 != 0 {
		return f, errors.New("a server frame is masked")
	}
	if hdr[0]&0x70 != 0 {
		return f, fmt.Errorf("reserved bits set: %#x", hdr[0])
	}
	f.fin, f.opcode = hdr[0]&0x80 != 0, hdr[0]&0x0f
	var n uint64
	switch l := hdr[1] & 0x7f; l {
	case 126:
		hdr = hdr[:4]
		if _, err := io.ReadFull(r, hdr[2:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(hdr[2:]))
		if n < 126 {
			return f, fmt.Errorf("length %d in a 16-bit field", n)
		}
	case 127:
		hdr = hdr[:10]
		if _, err := io.ReadFull(r, hdr[2:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(hdr[2:])
		if n <= 0xffff || n>>63 != 0 {
			return f, fmt.Errorf("length %d in a 64-bit field", n)
		}
	default:
		n = uint64(l)
	}
	if f.opcode >= 8 && (n > 125 || !f.fin) {
		return f, fmt.Errorf("control frame of %d bytes, fin %v", n, f.fin)
	}
	f.header = hdr
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, fmt.Errorf("payload of %d bytes: %w", n, err)
	}
	return f, nil
}

// splitWireFrames parses b, which must hold whole frames only.
func splitWireFrames(b []byte) ([]wireFrame, error) {
	r := bytes.NewReader(b)
	var out []wireFrame
	for r.Len() > 0 {
		f, err := readWireFrame(r)
		if err != nil {
			return out, fmt.Errorf("frame %d of a %d-byte write: %w", len(out), len(b), err)
		}
		out = append(out, f)
	}
	return out, nil
}

// maskedTextFrame is a client text frame carrying payload, masked with a
// random key as RFC 6455 5.3 requires of clients.
func maskedTextFrame(t *testing.T, payload []byte) []byte {
	t.Helper()
	b := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	var key [4]byte
	_, err := rand.Read(key[:])
	require.NoError(t, err)
	key[0] |= 1 // never the all-zero key, which would leave the payload as is
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// deliverAtOnce appends evs to id's mailbox under one hold of the
// participant's lock: the writer the first one wakes cannot collect before
// the last one is in, so it finds them all ready together.
func deliverAtOnce(th *testHub, id string, evs ...*Event) {
	th.t.Helper()
	p := th.participant(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		require.Equal(th.t, Live, th.hub.deliverLocked(p, ev), "deliver to %s", id)
	}
}

// frameOfSize returns an event whose frame for seq is exactly size bytes.
func frameOfSize(t *testing.T, seq uint64, size int) *Event {
	t.Helper()
	id := fmt.Sprintf("e%d", seq)
	pad := size - NewEvent(id, "", json.RawMessage(`""`), time.Now()).frameSize(seq)
	require.GreaterOrEqual(t, pad, 0, "no event frame of %d bytes", size)
	ev := NewEvent(id, "", json.RawMessage(`"`+strings.Repeat("x", pad)+`"`), time.Now())
	require.Equal(t, size, ev.frameSize(seq))
	return ev
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutinesRunning counts the goroutines with fn (a fully qualified
// function name) on their stack.
func goroutinesRunning(fn string) int {
	count := 0
	for _, g := range strings.Split(allStacks(), "\n\n") {
		if strings.Contains(g, "\n"+fn+"(") {
			count++
		}
	}
	return count
}

// goroutines counts the goroutines but those of testify's Eventually, which
// runs each check of its condition in a goroutine of its own.
func goroutines() int {
	count := 0
	for _, g := range strings.Split(allStacks(), "\n\n") {
		if !strings.Contains(g, "\ncreated by github.com/stretchr/testify/assert.Eventually") {
			count++
		}
	}
	return count
}

// goroutinesWith counts the goroutines with a function whose fully
// qualified name starts with prefix on their stack.
func goroutinesWith(prefix string) int {
	count := 0
	for _, g := range strings.Split(allStacks(), "\n\n") {
		if strings.Contains(g, "\n"+prefix) {
			count++
		}
	}
	return count
}

const (
	writeLoopFunc  = "github.com/switchyard-gw/switchyard/ws.(*writer).writeLoop"
	connServeFunc  = "github.com/switchyard-gw/switchyard/ws.(*conn).serve"
	httpServerFunc = "net/http.(*conn).serve"
)

// ---------------------------------------------------------------------------
// 1. Frame headers.

func TestAppendFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{1, []byte{0x81, 1}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0x00, 0x7e}},
		{127, []byte{0x81, 126, 0x00, 0x7f}},
		{256, []byte{0x81, 126, 0x01, 0x00}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
		{1 << 24, []byte{0x81, 127, 0, 0, 0, 0, 0x01, 0, 0, 0}},
		{1<<32 + 5, []byte{0x81, 127, 0, 0, 0, 0x01, 0, 0, 0, 0x05}},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			assert.Equal(t, tc.want, appendFrameHeader(nil, tc.n))
			// It appends: what is in the buffer stays in front.
			prefix := []byte("abc")
			got := appendFrameHeader(prefix, tc.n)
			assert.Equal(t, append([]byte("abc"), tc.want...), got)
		})
	}

	// Every length reads back through a strict parser (minimal encoding).
	for _, n := range []int{0, 1, 124, 125, 126, 127, 1000, 65534, 65535, 65536, 65537, 200000} {
		b := append(appendFrameHeader(nil, n), make([]byte, n)...)
		f, err := readWireFrame(bytes.NewReader(b))
		require.NoError(t, err, "length %d", n)
		assert.True(t, f.fin, "length %d: FIN", n)
		assert.Equal(t, byte(1), f.opcode, "length %d: text", n)
		assert.Len(t, f.payload, n)
	}
}

// TestFrameSizesRoundTrip sends event frames whose WebSocket messages land
// on each side of the 7/16-bit (125/126) and 16/64-bit (65535/65536) length
// boundaries through a real hub connection to a real client, one by one and
// several in one write, with and without batch=1.
// deliverOneByOne delivers one event of each frame size to alice, seqs
// after seq, and checks that the client gets each intact as one message
// before the next goes; it returns the last seq.
func deliverOneByOne(t *testing.T, th *testHub, cl *wsClient, seq uint64, sizes []int) uint64 {
	t.Helper()
	for _, size := range sizes {
		seq++
		ev := frameOfSize(t, seq, size)
		th.deliver("alice", ev)
		msg, err := cl.readMessage()
		require.NoError(t, err, "message of %d bytes", size)
		require.Equal(t, ev.appendFrame(nil, seq), msg, "message of %d bytes", size)
	}
	return seq
}

func TestFrameSizesRoundTrip(t *testing.T) {
	sizes := []int{125, 126, 127, 65535, 65536, 65537, 100}

	t.Run("batch=0", func(t *testing.T) {
		rec := &wireRecorder{}
		// Room for every sized frame in one write-loop pass.
		th := newTestHub(t, Config{MaxBatchBytes: 1 << 20}, rec.option)
		cl, _ := th.attach("alice", nil)
		seq := uint64(0)

		// One at a time: each message alone in its write.
		seq = deliverOneByOne(t, th, cl, seq, sizes)

		// All at once: one write holds every size, headers of each width.
		mark := rec.writeCount()
		var evs []*Event
		var want [][]byte
		for _, size := range sizes {
			seq++
			ev := frameOfSize(t, seq, size)
			evs = append(evs, ev)
			want = append(want, ev.appendFrame(nil, seq))
		}
		deliverAtOnce(th, "alice", evs...)
		for i, w := range want {
			msg, err := cl.readMessage()
			require.NoError(t, err, "message %d", i)
			require.Equal(t, w, msg, "message %d (%d bytes), in order", i, len(w))
		}
		writes := rec.writesSince(mark)
		require.Len(t, writes, 1, "the frames ready together go out in one write")
		frames, err := splitWireFrames(writes[0])
		require.NoError(t, err)
		require.Len(t, frames, len(want))
		wantHeaders := [][]byte{
			{0x81, 125},
			{0x81, 126, 0, 126},
			{0x81, 126, 0, 127},
			{0x81, 126, 0xff, 0xff},
			{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0},
			{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 1},
			{0x81, 100},
		}
		for i, f := range frames {
			assert.Equal(t, wantHeaders[i], f.header, "header of frame %d", i)
			assert.Equal(t, want[i], f.payload, "payload of frame %d", i)
		}
	})

	t.Run("batch=1", func(t *testing.T) {
		rec := &wireRecorder{}
		th := newTestHub(t, Config{}, rec.option) // MaxBatchBytes 64 KiB
		require.Equal(t, 65536, th.hub.cfg.MaxBatchBytes)
		cl, _ := th.attach("alice", q("batch", "1"))
		seq := uint64(0)

		// One at a time: a message of a single frame.
		seq = deliverOneByOne(t, th, cl, seq, sizes)

		// Pairs ready together: joined by a newline into a message of exactly
		// the total, up to MaxBatchBytes; a pair one byte over is split.
		for _, pair := range []struct {
			a, b     int
			messages int
		}{
			{62, 62, 1},       // 125
			{62, 63, 1},       // 126
			{32767, 32767, 1}, // 65535
			{32767, 32768, 1}, // 65536 = MaxBatchBytes
			{32768, 32768, 2}, // 65537: one byte over, two messages
			{100, 65435, 1},   // 65536 again, lopsided
		} {
			t.Run(fmt.Sprintf("%d+%d", pair.a, pair.b), func(t *testing.T) {
				mark := rec.writeCount()
				ea, eb := frameOfSize(t, seq+1, pair.a), frameOfSize(t, seq+2, pair.b)
				fa, fb := ea.appendFrame(nil, seq+1), eb.appendFrame(nil, seq+2)
				seq += 2
				deliverAtOnce(th, "alice", ea, eb)
				var want [][]byte
				if pair.messages == 1 {
					want = [][]byte{append(append(append([]byte(nil), fa...), '\n'), fb...)}
				} else {
					want = [][]byte{fa, fb}
				}
				for i, w := range want {
					msg, err := cl.readMessage()
					require.NoError(t, err)
					require.Equal(t, len(w), len(msg), "length of message %d", i)
					require.Equal(t, w, msg, "message %d", i)
				}
				writes := rec.writesSince(mark)
				require.Len(t, writes, 1, "one write-loop pass, one write")
				frames, err := splitWireFrames(writes[0])
				require.NoError(t, err)
				require.Len(t, frames, len(want))
				for i, f := range frames {
					assert.Equal(t, appendFrameHeader(nil, len(want[i])), f.header, "header of message %d", i)
				}
			})
		}
	})
}

// ---------------------------------------------------------------------------
// 2. Early client bytes.

// TestEarlyClientFrames: a client that sends its first frames in the same
// write as the upgrade request, before the 101 answer, has them read and
// answered; none is lost at the hijack.
func TestEarlyClientFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		pad  int // size of a submit frame's event sent after the join; 0: none
	}{
		{"join only", 0},
		{"beyond the 512-byte read buffer", 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &wireRecorder{}
			th := newTestHub(t, Config{}, rec.option)

			nc, err := net.Dial("tcp", th.srv.Listener.Addr().String())
			require.NoError(t, err)
			defer nc.Close()
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))

			var keyBytes [16]byte
			_, err = rand.Read(keyBytes[:])
			require.NoError(t, err)
			key := base64.StdEncoding.EncodeToString(keyBytes[:])
			var out bytes.Buffer
			fmt.Fprintf(&out, "GET /v1/gateway/ws?participant_id=early&session_id=s1 HTTP/1.1\r\n"+
				"Host: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", th.srv.Listener.Addr(), key)
			out.Write(maskedTextFrame(t, []byte(`{"type":"join","id":"j1","session_id":"s2"}`)))
			event := `{"event_type":"message","text":"` + strings.Repeat("y", tc.pad) + `"}`
			if tc.pad > 0 {
				out.Write(maskedTextFrame(t, []byte(`{"type":"submit","id":"c1","event":`+event+`}`)))
			}
			_, err = nc.Write(out.Bytes()) // everything before reading anything
			require.NoError(t, err)

			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			assert.Equal(t, base64.StdEncoding.EncodeToString(sum[:]), resp.Header.Get("Sec-WebSocket-Accept"))

			next := func() frame {
				t.Helper()
				f, err := readWireFrame(br)
				require.NoError(t, err)
				require.True(t, f.fin)
				require.Equal(t, byte(1), f.opcode, "a text frame: %q", f.payload)
				return parseFrame(t, f.payload)
			}
			w := next()
			require.Equal(t, "welcome", w.Type, "first frame: %s", w.Raw)
			assert.Equal(t, "early", w.ParticipantID)

			r := next()
			require.Equal(t, "result", r.Type, "frame: %s", r.Raw)
			assert.Equal(t, "j1", r.ID)
			assert.Equal(t, http.StatusOK, r.Status)
			assert.JSONEq(t, `{"status":"ok"}`, string(r.Body))
			if tc.pad > 0 {
				r := next()
				require.Equal(t, "result", r.Type, "frame: %s", r.Raw)
				assert.Equal(t, "c1", r.ID)
				assert.Equal(t, http.StatusOK, r.Status)
			}

			calls := th.backend.Calls()
			wantCalls := 1
			if tc.pad > 0 {
				wantCalls = 2
			}
			require.Len(t, calls, wantCalls)
			assert.Equal(t, "join", calls[0].Method)
			assert.Equal(t, "s2", calls[0].Session)
			assert.Equal(t, "early", calls[0].Who.ParticipantID)
			if tc.pad > 0 {
				assert.Equal(t, "submit", calls[1].Method)
				assert.JSONEq(t, event, string(calls[1].Event))
			}

			// The test did exercise early bytes: the server had read the
			// client frames with the request.
			buffered := rec.bufferedAtHijack()
			require.Len(t, buffered, 1)
			clientBytes := out.Len() - strings.Index(out.String(), "\r\n\r\n") - 4
			assert.Equal(t, clientBytes, buffered[0], "the server had buffered the client frames at the hijack")
			if tc.pad > 0 {
				assert.Greater(t, buffered[0], connReadBufferSize)
			}

			// The connection still works after the early frames: a later
			// join is answered too.
			_, err = nc.Write(maskedTextFrame(t, []byte(`{"type":"leave","id":"l1","session_id":"s2"}`)))
			require.NoError(t, err)
			r = next()
			require.Equal(t, "result", r.Type, "frame: %s", r.Raw)
			assert.Equal(t, "l1", r.ID)
		})
	}
}

// ---------------------------------------------------------------------------
// 3. Several messages in one write.

func TestManyMessagesWithoutBatch(t *testing.T) {
	const burst, trickle = 300, 2000
	rec := &wireRecorder{}
	th := newTestHub(t, Config{MailboxSize: 4096}, rec.option)
	cl, _ := th.attach("alice", nil)

	// Ready together: one write, one message per event.
	mark := rec.writeCount()
	var evs []*Event
	for i := 1; i <= burst; i++ {
		evs = append(evs, numberedEvent(i))
	}
	deliverAtOnce(th, "alice", evs...)
	for i := 1; i <= burst; i++ {
		msg, err := cl.readMessage()
		require.NoError(t, err)
		require.NotContains(t, string(msg), "\n", "without batch=1 a message is one frame")
		f := parseFrame(t, msg)
		require.Equal(t, "event", f.Type, "message %s", msg)
		require.Equal(t, uint64(i), f.Seq)
		require.Equal(t, fmt.Sprintf("e%d", i), f.EventID)
		require.Equal(t, evs[i-1].appendFrame(nil, uint64(i)), msg)
	}
	writes := rec.writesSince(mark)
	require.Len(t, writes, 1, "%d frames ready together take one write", burst)
	frames, err := splitWireFrames(writes[0])
	require.NoError(t, err)
	assert.Len(t, frames, burst)

	// Delivered one by one while the client does not read: every event
	// arrives, as its own message, in seq order.
	mark = rec.writeCount()
	for i := burst + 1; i <= burst+trickle; i++ {
		th.deliver("alice", numberedEvent(i))
	}
	for i := burst + 1; i <= burst+trickle; i++ {
		msg, err := cl.readMessage()
		require.NoError(t, err)
		require.NotContains(t, string(msg), "\n")
		f := parseFrame(t, msg)
		require.Equal(t, "event", f.Type, "message %s", msg)
		require.Equal(t, uint64(i), f.Seq, "seq order, none lost")
		require.Equal(t, fmt.Sprintf("e%d", i), f.EventID)
	}
	// On the wire: whole frames in every write, one per event.
	writes = rec.writesSince(mark)
	total := 0
	for _, w := range writes {
		frames, err := splitWireFrames(w)
		require.NoError(t, err, "every write holds whole frames")
		total += len(frames)
	}
	assert.Equal(t, trickle, total)
	t.Logf("%d events one by one took %d writes", trickle, len(writes))
}

func TestBatchMessagesCappedAtMaxBatchBytes(t *testing.T) {
	const maxBatch = 1024
	const total = 400
	rec := &wireRecorder{}
	th := newTestHub(t, Config{MaxBatchBytes: maxBatch, MailboxSize: 1024}, rec.option)
	cl, _ := th.attach("bob", q("batch", "1"))
	mark := rec.writeCount()

	// Frames of many sizes, every 97th larger than MaxBatchBytes.
	evs := make([]*Event, total+1)
	want := make([][]byte, total+1)
	for i := 1; i <= total; i++ {
		size := 60 + (i*37)%400
		if i%97 == 0 {
			size = 1500
		}
		evs[i] = frameOfSize(t, uint64(i), size)
		want[i] = evs[i].appendFrame(nil, uint64(i))
	}
	deliverAtOnce(th, "bob", evs[1:total/2+1]...) // half ready together
	for i := total/2 + 1; i <= total; i++ {       // half one by one
		th.deliver("bob", evs[i])
	}

	checkMessage := func(msg []byte) [][]byte {
		t.Helper()
		parts := bytes.Split(msg, []byte("\n"))
		if len(parts) > 1 {
			require.LessOrEqual(t, len(msg), maxBatch, "a message of %d frames passes MaxBatchBytes", len(parts))
		}
		for _, p := range parts {
			require.NotEmpty(t, p, "an empty frame")
		}
		return parts
	}
	seq, multi := 1, 0
	for seq <= total {
		msg, err := cl.readMessage()
		require.NoError(t, err)
		parts := checkMessage(msg)
		if len(parts) > 1 {
			multi++
		}
		for _, p := range parts {
			require.LessOrEqual(t, seq, total, "more frames than events")
			require.Equal(t, string(want[seq]), string(p), "frame %d, in order", seq)
			seq++
		}
	}
	assert.Positive(t, multi, "no message carried several frames")

	// The same on the wire: every write holds whole frames, every message
	// of several frames is within MaxBatchBytes.
	frames := 0
	for _, w := range rec.writesSince(mark) {
		ws, err := splitWireFrames(w)
		require.NoError(t, err)
		for _, f := range ws {
			checkMessage(f.payload)
			frames += len(bytes.Split(f.payload, []byte("\n")))
		}
	}
	assert.Equal(t, total, frames)
}

// ---------------------------------------------------------------------------
// 4. No goroutine per idle connection but its reader.

func TestIdleConnectionsHaveNoWriterGoroutine(t *testing.T) {
	const n = 50
	th := newTestHub(t, Config{})
	baseHTTP := goroutinesRunning(httpServerFunc)
	before := goroutines()

	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i], _ = th.attach(fmt.Sprintf("idle-%d", i), nil)
	}
	// Every welcome was read. What stays per connection on the server is
	// its reader: no writer, and no HTTP server goroutine.
	if !assert.Eventually(t, func() bool {
		return goroutinesRunning(writeLoopFunc) == 0 &&
			goroutinesRunning(connServeFunc) == n &&
			goroutinesRunning(httpServerFunc) == baseHTTP
	}, 10*time.Second, time.Millisecond) {
		t.Fatalf("%d idle connections: writers %d, readers %d, HTTP server goroutines %d (%d before)", n,
			goroutinesRunning(writeLoopFunc), goroutinesRunning(connServeFunc), goroutinesRunning(httpServerFunc), baseHTTP)
	}

	// The total grew by about n: the readers. Nothing else grows with the
	// number of connections: the client side holds no goroutine once
	// upgraded (a few may still be on their way out), and the server's HTTP
	// goroutines have ended.
	assert.Equal(t, n, goroutinesWith("github.com/switchyard-gw/switchyard/ws.(*conn)."),
		"one goroutine of a connection per idle connection")
	if !assert.Eventually(t, func() bool { return goroutines() <= before+n+5 }, 10*time.Second, time.Millisecond) {
		t.Fatalf("more than one goroutine per idle connection: %d more for %d", goroutines()-before, n)
	}
	settled := goroutines()
	t.Logf("%d idle connections: %d more goroutines", n, settled-before)
	assert.GreaterOrEqual(t, settled-before, n)

	// Work starts a writer; once the event is written it goes.
	th.deliver("idle-7", numberedEvent(1))
	clients[7].nextEvent(1)
	require.Eventually(t, func() bool { return goroutinesRunning(writeLoopFunc) == 0 },
		10*time.Second, time.Millisecond, "the writer outlived its work")
	// A later event starts a new one: no wake-up is lost.
	th.deliver("idle-7", numberedEvent(2))
	clients[7].nextEvent(2)

	// Everyone at once, from several goroutines.
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := th.hub.Lookup(fmt.Sprintf("idle-%d", i))
			for k := 0; k < 3; k++ {
				th.hub.Deliver(p, numberedEvent(100+k))
			}
		}()
	}
	wg.Wait()
	for i, cl := range clients {
		first := uint64(1)
		if i == 7 {
			first = 3
		}
		for k := uint64(0); k < 3; k++ {
			f := cl.nextEvent(first + k)
			require.Equal(t, fmt.Sprintf("e%d", 100+k), f.EventID)
		}
	}
	require.Eventually(t, func() bool { return goroutinesRunning(writeLoopFunc) == 0 },
		10*time.Second, time.Millisecond, "writers outlived their work")
	require.Eventually(t, func() bool { return goroutines() <= settled },
		10*time.Second, time.Millisecond, "the deliveries left goroutines behind")
}

// ---------------------------------------------------------------------------
// 7. Nothing after a close frame.

// TestGuardedConnWritesNoDataAfterACloseFrame: once coder/websocket's side
// has written a close frame, data writes are refused and reach nobody.
func TestGuardedConnWritesNoDataAfterACloseFrame(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, ok := <-accepted
	require.True(t, ok)
	g := &guardedConn{Conn: server}

	require.NoError(t, g.writeData(appendFrameHeader(nil, 2)), "data before any close goes out")
	_, err = g.Write([]byte{0x88, 0x02, 0x03, 0xf1}) // close 1009, as coder/websocket writes it
	require.NoError(t, err)
	require.ErrorIs(t, g.writeData(append(appendFrameHeader(nil, 2), 'h', 'i')), net.ErrClosed)
	require.NoError(t, g.Close())

	got, err := io.ReadAll(client)
	require.NoError(t, err)
	assert.Equal(t, []byte{0x81, 0x02, 0x88, 0x02, 0x03, 0xf1}, got[len(got)-6:],
		"the stream ends with the close frame; the refused data frame is not there")
	assert.Len(t, got, 2+4, "the first data frame (a bare header), then the close frame")
}

// TestNoDataFrameFollowsTheServersClose: a client frame over the read limit
// makes coder/websocket close with 1009 from inside the reader while events
// keep coming; the hub's writer must not send events after that close
// frame. (Before the guard, about one run in ten had some.)
func TestNoDataFrameFollowsTheServersClose(t *testing.T) {
	closes := 0
	for iter := range 20 {
		th := newTestHub(t, Config{MaxFrameBytes: 256, MailboxSize: 1 << 14, WriteQueueBytes: 64 << 20})
		nc, err := net.Dial("tcp", th.srv.Listener.Addr().String())
		require.NoError(t, err)
		require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
		var kb [16]byte
		_, _ = rand.Read(kb[:])
		fmt.Fprintf(nc, "GET /v1/gateway/ws?participant_id=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"+
			"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", base64.StdEncoding.EncodeToString(kb[:]))
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		welcome, err := readWireFrame(br)
		require.NoError(t, err)
		require.Contains(t, string(welcome.payload), "welcome")

		p := th.participant("a")
		var stop atomic.Bool
		delivered := make(chan struct{})
		go func() {
			defer close(delivered)
			for i := 0; !stop.Load() && i < 1<<14; i++ {
				th.hub.Deliver(p, numberedEvent(i))
			}
		}()
		_, err = nc.Write(maskedTextFrame(t, []byte(`{"type":"submit","event":"`+strings.Repeat("z", 1000)+`"}`)))
		require.NoError(t, err)
		sawClose, after := false, 0
		for {
			f, err := readWireFrame(br)
			if err != nil {
				break
			}
			switch {
			case f.opcode == 8:
				sawClose = true
			case sawClose:
				after++
			}
		}
		stop.Store(true)
		<-delivered
		nc.Close()
		// The server closes its socket with the rest of the oversized frame
		// unread, so the kernel may reset the connection and drop what the
		// client had not read yet, close frame included.
		if sawClose {
			closes++
		}
		require.Zero(t, after, "iteration %d: data frames after the close frame", iter)
	}
	require.GreaterOrEqual(t, closes, 10, "most runs see the close frame")
}
