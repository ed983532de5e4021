// Package testkit holds the helpers that the tests of several packages
// share, so each lives once: memberlist timers fast enough for in-process
// clusters (FastGossip), starting a node for the length of a test (Start,
// Logger) and a real WebSocket client that reads a node's frames (WS).
//
// It is for tests only. It depends on the standard library, testify,
// memberlist and coder/websocket and on nothing of Switchyard's own, so
// that the internal tests of sidecar and ws can use it without an import
// cycle; what is particular to one package (decoding its frame type,
// building its nodes' configs) stays in that package's tests.
package testkit
