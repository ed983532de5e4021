// Package testkit holds the helpers that the tests of several packages
// share, so each lives once:
//
//   - FastGossip: memberlist timers fast enough for in-process clusters on
//     loopback;
//   - Start and Logger: a node (or any Server) for the length of a test,
//     with its logs off unless SWITCHYARD_TEST_LOGS asks for them;
//   - WS, Attach, Dial, AttachURL: a real WebSocket client that reads a
//     node's frames one at a time, sends frames and waits for the close;
//   - SmallBufferClient: an HTTP client whose sockets back up quickly, for
//     slow-consumer tests;
//   - MetricValue: a Prometheus counter's or gauge's value.
//
// It is for tests only. It depends on the standard library, testify,
// memberlist, coder/websocket and the Prometheus client, and on nothing of
// Switchyard's own, so that the internal tests of sidecar and ws use it
// without an import cycle; what is particular to one package (decoding its
// frames into its own type, building its nodes' configs) stays in that
// package's tests.
package testkit
