package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar"
)

const apiKey = "operator-key"

// startNode runs a node with the console on 127.0.0.1, joining join
// (gossip host:port) when it is set.
func startNode(t *testing.T, name, join string) *sidecar.Node {
	t.Helper()
	gc := &membership.GossipConfig{Bind: "127.0.0.1:0", RejoinInterval: 500 * time.Millisecond}
	if join != "" {
		gc.Join = []string{join}
	}
	n, err := sidecar.New(sidecar.Config{
		Listen: "127.0.0.1:0", NodeName: name, APIKeys: []string{apiKey}, UI: true,
		Gossip: gc, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown of %s: %v", name, err)
		}
	})
	return n
}

// call sends a JSON request with the API key and decodes the answer,
// which must be a 200.
func call(t *testing.T, method, u string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s answered %d %s", method, u, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return out
}

// waitCluster waits until both nodes see two alive members and have
// learnt each other's participants.
func waitCluster(t *testing.T, nodes ...*sidecar.Node) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ready := true
		for _, n := range nodes {
			alive := 0
			for _, m := range n.Gateway().Members() {
				if m.State == membership.StateAlive {
					alive++
				}
			}
			ready = ready && alive == len(nodes) && n.Settled()
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster did not form")
		}
		time.Sleep(20 * time.Millisecond) // polling Go state: there is no event to await
	}
}

// browser starts headless Chromium with the flags a closed network needs
// (no background connections, no QUIC, no first-run or sync) and a fresh
// profile, and returns a context for driving one tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no Chromium at %s (apt-get install chromium, or set CHROMIUM): %v", path, err)
	}
	// A fresh profile, removed after the browser has exited (not
	// t.TempDir, whose removal fails while Chromium's helpers still write).
	profile, err := os.MkdirTemp("", "switchyard-console-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // CI runs as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		_ = os.RemoveAll(profile)
	})
	// Start the browser on ctx itself: the context of the first Run owns
	// it, and run's contexts with deadlines are cancelled after each step.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// run runs actions with a deadline.
func run(t *testing.T, ctx context.Context, timeout time.Duration, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitTrue polls a JavaScript expression in the page until it is true.
func waitTrue(expr string) chromedp.Action {
	return chromedp.Poll(expr, nil, chromedp.WithPollingInterval(10*time.Millisecond))
}

func TestConsoleShowsMembersAndLiveEvents(t *testing.T) {
	a := startNode(t, "console-a", "")
	b := startNode(t, "console-b", a.GossipAddr())
	waitCluster(t, a, b)
	// carol is homed on a (the page's node), bob on b; both in s1.
	call(t, http.MethodPut, a.URL()+"/v1/gateway/sessions/s1/participants/carol", map[string]any{"participant_type": "human"})
	call(t, http.MethodPut, b.URL()+"/v1/gateway/sessions/s1/participants/bob", nil)

	ctx := browser(t)

	// The page loads without a key, and its data calls are refused.
	var title string
	run(t, ctx, 30*time.Second, "load the page",
		chromedp.Navigate(a.URL()+"/ui"),
		chromedp.Title(&title),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		waitTrue(`document.getElementById("status").textContent.includes("401")`),
	)
	if title != "Switchyard console" {
		t.Fatalf("title %q", title)
	}

	// With the key: both members, carol and her session.
	run(t, ctx, 15*time.Second, "enter the key and see both members",
		chromedp.SendKeys("#api-key", apiKey, chromedp.ByID),
		chromedp.Click(`#key-form button[type="submit"]`, chromedp.ByQuery),
		waitTrue(`(() => { const m = document.querySelector("#members tbody").textContent;
			return m.includes("console-a") && m.includes("console-b"); })()`),
		waitTrue(`document.querySelector("#participants tbody").textContent.includes("carol")`),
		waitTrue(`document.getElementById("status").textContent === ""`),
	)
	var rows int
	run(t, ctx, 5*time.Second, "count the members",
		chromedp.Evaluate(`document.querySelectorAll("#members tbody tr").length`, &rows))
	if rows != 2 {
		t.Fatalf("%d member rows, want 2", rows)
	}

	// Watch s1 from the sessions list; the welcome says the observer is
	// registered on the node.
	run(t, ctx, 15*time.Second, "watch s1",
		chromedp.WaitVisible(`//ul[@id="sessions"]//button[text()="s1"]`, chromedp.BySearch),
		chromedp.Click(`//ul[@id="sessions"]//button[text()="s1"]`, chromedp.BySearch),
		waitTrue(`document.getElementById("watch-state").textContent.startsWith("watching s1")`),
	)

	// An event submitted over REST appears within a second. The deadline
	// runs from the submit's answer: what the REST call itself takes on a
	// loaded machine is not the page's doing, and the node hands the event
	// to its observers before it answers, so from then on the time is the
	// page's (the WebSocket frame, the DOM update) and the poll's.
	message := fmt.Sprintf("hello console %d", time.Now().UnixNano())
	res := call(t, http.MethodPost, a.URL()+"/v1/gateway/events", map[string]any{
		"sender_id": "alice", "sender_type": "ai", "event_type": "message", "message": message, "session_id": "s1"})
	answered := time.Now()
	if res["recipients"] != float64(2) {
		t.Fatalf("recipients %v, want 2 (carol and bob; the console's observer is not one)", res["recipients"])
	}
	id := res["event_id"].(string)
	shown, cancel := context.WithDeadline(ctx, answered.Add(time.Second))
	defer cancel()
	err := chromedp.Run(shown, waitTrue(fmt.Sprintf(
		`[...document.querySelectorAll("#events li")].some(li => li.dataset.eventId === %q && li.textContent.includes(%q))`, id, message)))
	if err != nil {
		t.Fatalf("the event was not shown within 1 s of the submit's answer: %v", err)
	}
	t.Logf("event shown %v after the submit's answer", time.Since(answered).Round(time.Millisecond))

	// The observer did not join the session: it still lists two.
	s := call(t, http.MethodGet, b.URL()+"/v1/gateway/sessions/s1", nil)
	if got := len(s["participants"].([]any)); got != 2 {
		t.Fatalf("session s1 lists %d participants, want 2", got)
	}
}
