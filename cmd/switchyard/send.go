package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// clientFlags are the flags shared by the commands that talk to a node.
type clientFlags struct {
	url, apiKey string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8787", "base URL of the node, http:// or https:// (host:port alone means http://host:port)")
	fs.StringVar(&c.apiKey, "api-key", "", "API key to send as a bearer token")
}

// check reads --url: a node speaks http:// or https://, and an address
// without a scheme (127.0.0.1:8787) means http://.
func (c *clientFlags) check() error {
	u, err := nodeURL(c.url)
	if err != nil {
		return fmt.Errorf("%w: --url %v", errUsage, err)
	}
	c.url = u
	return nil
}

// nodeURL checks a node's base URL, adding http:// when it has no scheme.
func nodeURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: the scheme is %s://; give the node's http:// or https:// URL (listen derives ws:// or wss:// from it)", s, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	return s, nil
}

func sendCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("send")
	var c clientFlags
	c.register(fs)
	var ev struct {
		SenderID    string `json:"sender_id,omitempty"`
		SenderType  string `json:"sender_type,omitempty"`
		EventType   string `json:"event_type,omitempty"`
		Message     string `json:"message,omitempty"`
		SessionID   string `json:"session_id,omitempty"`
		RecipientID string `json:"recipient_id,omitempty"`
		EventID     string `json:"event_id,omitempty"`
	}
	fs.StringVar(&ev.SenderID, "sender-id", "", "sending participant's id")
	fs.StringVar(&ev.SenderType, "sender-type", "ai", "human or ai")
	fs.StringVar(&ev.EventType, "event-type", "message", "event kind")
	fs.StringVar(&ev.Message, "message", "", "message text")
	fs.StringVar(&ev.SessionID, "session-id", "", "target session")
	fs.StringVar(&ev.RecipientID, "recipient-id", "", "address one participant")
	fs.StringVar(&ev.EventID, "event-id", "", "idempotency key (default: assigned by the node)")
	timeout := fs.Duration("timeout", 30*time.Second, "request timeout")
	cmd := command{name: "send", synopsis: "[flags]", env: true,
		about: `
Submits one event, from the flags or (without --sender-id) a JSON event on
stdin, and prints the node's answer.`}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}

	var body []byte
	if ev.SenderID == "" { // no event in flags: read one JSON event from stdin
		var err error
		if body, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return fmt.Errorf("%w: give --sender-id and --session-id (or --recipient-id), or a JSON event on stdin", errUsage)
		}
	} else {
		body, _ = json.Marshal(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	status, answer, err := postJSON(ctx, c, "/v1/gateway/events", body)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(answer)))
	if status != http.StatusOK {
		return fmt.Errorf("the node answered %d", status)
	}
	return nil
}

func postJSON(ctx context.Context, c clientFlags, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.url, "/")+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: --url: %v", errUsage, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("submit: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, answer, nil
}
