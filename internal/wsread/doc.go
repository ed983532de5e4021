// Package wsread reads whole WebSocket messages into a buffer the caller
// reuses, so that a client reading many messages (the load generator, the
// benchmarks' subscribers) allocates nothing per message and does not blur
// the server's figures.
package wsread
