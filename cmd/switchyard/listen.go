package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/switchyard-gw/switchyard/client"
)

// errEnough stops the client once --count events were printed.
var errEnough = fmt.Errorf("enough events")

func listenCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("listen")
	var c clientFlags
	c.register(fs)
	var urls listFlag
	fs.Var(&urls, "also-url", "another node to reconnect to when --url is unreachable or draining (repeatable; host:port means http://host:port)")
	participant := fs.String("participant-id", "", "who attaches (required)")
	ptype := fs.String("participant-type", "ai", "human or ai")
	var sessions listFlag
	fs.Var(&sessions, "session-id", "session to join (repeatable)")
	resumeFrom := fs.Int64("resume-from", -1, "last seq received; replay what came after it")
	batch := fs.Bool("batch", false, "let the node pack several frames into one message")
	ack := fs.Bool("ack", false, "acknowledge received events")
	count := fs.Int("count", 0, "exit after this many event frames (0: run until interrupted)")
	cmd := command{name: "listen", synopsis: "--participant-id ID [flags]", env: true,
		about: `
Attaches as a participant and prints every frame as a JSON line; when it
cannot attach or the connection drops it retries, saying why on stderr.`}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if *participant == "" {
		return fmt.Errorf("%w: --participant-id is required", errUsage)
	}
	for i, u := range urls {
		nu, err := nodeURL(u)
		if err != nil {
			return fmt.Errorf("%w: --also-url %v", errUsage, err)
		}
		urls[i] = nu
	}
	cfg := client.Config{
		URLs:            append([]string{c.url}, urls...),
		Logger:          retryLogger(stderr),
		Credential:      c.apiKey,
		ParticipantID:   *participant,
		ParticipantType: *ptype,
		Sessions:        sessions,
		Batch:           *batch,
		Ack:             *ack,
	}
	if *resumeFrom >= 0 {
		from := uint64(*resumeFrom)
		cfg.ResumeFrom = &from
	}
	cl, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, stop := signalContext(discardLogger())
	defer stop()
	events := 0
	err = cl.Run(ctx, func(f client.Frame) error {
		fmt.Fprintf(stdout, "%s\n", f.Raw)
		if f.Type == "event" {
			events++
			if *count > 0 && events >= *count {
				return errEnough
			}
		}
		return nil
	})
	if err == errEnough || err == nil || ctx.Err() != nil {
		return nil
	}
	return err
}

// retryLogger prints the client's reconnects to w, one line each: which
// URL failed, why, which URL is tried next and after how long.
func retryLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			if len(groups) == 0 && a.Key == slog.MessageKey {
				return slog.String("listen", a.Value.String())
			}
			return a
		},
	}))
}
