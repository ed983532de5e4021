package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/switchyard-gw/switchyard/client"
)

// errEnough stops the client once --count events were printed.
var errEnough = fmt.Errorf("enough events")

func listenCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	var urls listFlag
	fs.Var(&urls, "also-url", "another node to reconnect to when --url is unreachable or draining (repeatable)")
	participant := fs.String("participant-id", "", "who attaches (required)")
	ptype := fs.String("participant-type", "ai", "human or ai")
	var sessions listFlag
	fs.Var(&sessions, "session-id", "session to join (repeatable)")
	resumeFrom := fs.Int64("resume-from", -1, "last seq received; replay what came after it")
	batch := fs.Bool("batch", false, "let the node pack several frames into one message")
	ack := fs.Bool("ack", false, "acknowledge received events")
	count := fs.Int("count", 0, "exit after this many event frames (0: run until interrupted)")
	if err := parseWithEnv(fs, args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *participant == "" {
		return fmt.Errorf("%w: --participant-id is required", errUsage)
	}
	cfg := client.Config{
		URLs:            append([]string{c.url}, urls...),
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
