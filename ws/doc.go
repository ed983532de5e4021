// Package ws holds a node's participants and serves their WebSocket
// connections (SPEC sections 3 and 4).
//
// Each Participant has a mailbox: a bounded ring of the recent events
// addressed to it, numbered by a per-participant seq. A connection is a
// cursor into that mailbox, so delivering an event is an append and a
// non-blocking wake-up of the participant's writers; it never waits on a
// socket. Events are encoded once (Event) and shared by every mailbox on
// the node; only the seq is written per recipient.
//
// The files, one job each:
//
//   - hub.go: the Hub (participants in shards, sessions, delivery, the
//     sweeper, drain and shutdown). Lock order is written at its top.
//   - attach.go: Hub.Attach: admission against the connection caps, the
//     upgrade, binding the connection to its participant, the welcome
//     frame and where the cursor starts (resume_from).
//   - conn.go: a connection, its reader and writer, and the goroutine
//     that serves it until the client goes.
//   - reader.go: client frames (submit, join, leave, ack) turned into
//     calls on the Backend and the hub; their answers are queued for the
//     writer.
//   - writer.go, writebatch.go: the writer, the sending side of one
//     connection: its queue of control frames, the close code it ends
//     with, and the write loop that collects what is ready into one write.
//   - keepalive.go: pings for quiet connections, and dropping those whose
//     client vanished without closing (their slots come back).
//   - wire.go: WebSocket framing of data frames and the hijacked socket
//     they are written to.
//   - mailbox.go, dedupe.go, budget.go: a participant's events, the keys
//     of the events it took, and the node's byte budget for them.
//   - handoff.go: moving a participant between nodes.
//   - frames.go: the JSON frames; config.go, errors.go, metrics.go.
//
// Every connection has a reader goroutine, started by Hub.Attach once the
// upgrade is done (the HTTP handler returns), and a writer goroutine only
// while it has something to write: whoever queues work for an idle
// connection starts one, and it exits when nothing is left. The writer
// copies what is ready from the mailbox under the participant's lock and,
// after releasing it, sends everything in one write to the socket, framed
// by wire.go (one WebSocket message per frame, or newline-joined frames
// when the client asked for batch=1). A connection whose unsent backlog
// passes WriteQueueBytes is closed with 4000 and resumes from the mailbox.
// The Hub's sweeper expires mailboxes, forgets participants whose offline
// window ended, cuts writes that passed their deadline, and pings quiet
// connections (the ping goes out through the writer; the reader hears the
// pong), dropping those that do not answer.
package ws
