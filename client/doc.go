// Package client is a Go client for Switchyard participants: it attaches
// over a WebSocket, reconnects with exponential backoff and full jitter
// (trying the next node URL each time), resumes from the last seq it
// received so that nothing inside the mailbox window is lost or repeated,
// optionally acknowledges, and submits events over the socket.
//
//	c, err := client.New(client.Config{
//		URLs:          []string{"http://127.0.0.1:8787", "http://127.0.0.1:8788"},
//		ParticipantID: "bob",
//		Sessions:      []string{"s1"},
//	})
//	if err != nil { … }
//	err = c.Run(ctx, func(f client.Frame) error {
//		if f.Type == "event" {
//			fmt.Println(f.Seq, string(f.Event))
//		}
//		return nil
//	})
//
// The handler runs on Run's goroutine, in frame order. A gap frame means the
// node no longer held events FromSeq to ToSeq. Submit may be called from
// other goroutines while Run runs.
package client
