// Command switchyard-bench is Switchyard's load generator. It talks to
// running nodes like any client (REST submits, WebSocket participants),
// measures deliveries, latency, loss and duplicates, and reads the server's
// CPU time and memory from /proc. See docs/BENCHMARKS.md.
//
// The scenarios: fanout, pairs, cross-node and idle run against nodes
// already running (--url, --pid); cluster starts N switchyard processes
// itself (--switchyard, --nodes) and measures what membership costs a
// fleet; --floor-listen serves the floor server the others are compared
// with.
package main
