// Package rawws is a minimal WebSocket client for load generators and
// benchmarks that share the machine's cores with the server they measure. It
// does the opening handshake by hand and then reads the server's frames
// straight from a buffered socket: no per-message locks, contexts or timers,
// so that the reading side costs little more than its read system calls.
//
// It only reads data messages. It answers pings, treats a close frame as the
// end of the stream, and sends nothing else; participants that also write use
// github.com/coder/websocket.
package rawws
