package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/switchyard-gw/switchyard/internal/rawws"
)

// The floor server answers the two requests the load scenarios make —
// attach over WebSocket, submit over REST — with the least work that still
// delivers: net/http, the body decoded for its session_id, one frame
// written to each attached subscriber of the session straight from the
// handler, a fixed answer. No validation, mailbox, ordering or
// limits: it is not a gateway. Measured like a node, it shows what
// net/http and the kernel alone cost per submit on this machine, the floor
// under Switchyard's own figures (docs/BENCHMARKS.md).
type floorServer struct {
	mu       sync.Mutex
	sessions map[string][]*floorConn
	closed   bool // set by closeAll: a later attach closes its connection itself
	readers  sync.WaitGroup
}

type floorConn struct {
	mu sync.Mutex // one frame at a time
	nc net.Conn
}

// serveFloor runs the floor server on l until ctx ends, and returns once
// its connections and their goroutines are gone.
func serveFloor(ctx context.Context, l net.Listener) error {
	f := &floorServer{sessions: map[string][]*floorConn{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/gateway/ws", f.attach)
	mux.HandleFunc("POST /v1/gateway/events", f.submit)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Shutdown waits for the handlers, so no attach is midway. It also
		// waits up to 5 s for connections that never sent a request; past
		// its deadline, Close drops those, or their goroutines would stay.
		if srv.Shutdown(shutdown) != nil {
			_ = srv.Close()
		}
		f.closeAll()
	}()
	slog.Info("floor server listening", "addr", l.Addr().String())
	err := srv.Serve(l)
	<-stopped // Serve returns as soon as Shutdown starts
	f.readers.Wait()
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (f *floorServer) attach(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	session := r.URL.Query().Get("session_id")
	if key == "" || session == "" {
		http.Error(w, "need a WebSocket upgrade and a session_id", http.StatusBadRequest)
		return
	}
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	// c is in its session before its welcome is written, and the welcome is
	// written under c's lock: a client that has read its welcome gets every
	// event submitted after it, and no event comes before the welcome.
	c := &floorConn{nc: nc}
	c.mu.Lock()
	defer c.mu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = nc.Close()
		return
	}
	// Appending writes past the end of every slice a submit holds.
	f.sessions[session] = append(f.sessions[session], c)
	f.readers.Add(1)
	f.mu.Unlock()
	go func() { // the reader: discards what the client sends, and notices when it leaves
		defer f.readers.Done()
		_, _ = io.Copy(io.Discard, bufio.NewReaderSize(rw, 512))
		_ = nc.Close()
		f.remove(session, c)
	}()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		rawws.AcceptKey(key) + "\r\n\r\n")
	_, _ = rw.Write(appendServerFrame(nil, []byte(`{"type":"welcome"}`)))
	if rw.Flush() != nil {
		_ = nc.Close() // the reader ends and removes c
	}
}

func (f *floorServer) remove(session string, c *floorConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	conns := f.sessions[session]
	for i, o := range conns {
		if o == c { // a new slice: submits may be writing to the old one
			f.sessions[session] = append(conns[:i:i], conns[i+1:]...)
			return
		}
	}
}

func (f *floorServer) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, conns := range f.sessions {
		for _, c := range conns {
			_ = c.nc.Close()
		}
	}
}

func (f *floorServer) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var ev struct {
		SessionID string `json:"session_id"`
	}
	if err != nil || json.Unmarshal(body, &ev) != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	payload := make([]byte, 0, len(body)+40)
	payload = append(payload, `{"type":"event","seq":0,"event":`...)
	payload = append(append(payload, body...), '}')
	frame := appendServerFrame(make([]byte, 0, len(payload)+10), payload)
	f.mu.Lock()
	conns := f.sessions[ev.SessionID]
	f.mu.Unlock()
	for _, c := range conns { // a snapshot: remove never changes a slice in place
		c.mu.Lock()
		_, _ = c.nc.Write(frame)
		c.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"ok"}`)
}

// appendServerFrame appends payload as one unmasked text frame.
func appendServerFrame(dst, payload []byte) []byte {
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x81, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x81, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, payload...)
}
