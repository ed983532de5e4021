package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

func listenCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	participant := fs.String("participant-id", "", "who attaches (required)")
	ptype := fs.String("participant-type", "ai", "human or ai")
	var sessions listFlag
	fs.Var(&sessions, "session-id", "session to join (repeatable)")
	resumeFrom := fs.Int64("resume-from", -1, "last seq received; replay what came after it")
	batch := fs.Bool("batch", false, "let the node pack several frames into one message")
	count := fs.Int("count", 0, "exit after this many event frames (0: run until the connection closes)")
	if err := parseWithEnv(fs, args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *participant == "" {
		return fmt.Errorf("%w: --participant-id is required", errUsage)
	}

	u, err := url.Parse(strings.TrimSuffix(c.url, "/") + "/v1/gateway/ws")
	if err != nil {
		return fmt.Errorf("%w: --url: %v", errUsage, err)
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	q := url.Values{"participant_id": {*participant}, "participant_type": {*ptype}, "session_id": sessions}
	if *resumeFrom >= 0 {
		q.Set("resume_from", strconv.FormatInt(*resumeFrom, 10))
	}
	if *batch {
		q.Set("batch", "1")
	}
	u.RawQuery = q.Encode()

	ctx, stop := signalContext(discardLogger())
	defer stop()
	header := http.Header{}
	if c.apiKey != "" {
		header.Set("Authorization", "Bearer "+c.apiKey)
	}
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("attach refused (%d): %s", resp.StatusCode, bytes.TrimSpace(body))
		}
		return fmt.Errorf("attach: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(-1)

	events := 0
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				_ = conn.Close(websocket.StatusNormalClosure, "")
				return nil
			}
			if status := websocket.CloseStatus(err); status != -1 {
				return fmt.Errorf("the node closed the connection: %d %s", status, closeReason(err))
			}
			return fmt.Errorf("read: %w", err)
		}
		for _, frame := range bytes.Split(data, []byte("\n")) { // batch=1 packs frames by lines
			fmt.Fprintf(stdout, "%s\n", frame)
			if bytes.HasPrefix(frame, []byte(`{"type":"event"`)) {
				events++
			}
		}
		if *count > 0 && events >= *count {
			return conn.Close(websocket.StatusNormalClosure, "")
		}
	}
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}
