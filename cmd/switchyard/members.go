package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchyard-gw/switchyard/membership"
)

// membersCommand prints the cluster as a node sees it, as a table.
func membersCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("members")
	var c clientFlags
	c.register(fs)
	cmd := command{name: "members", synopsis: "[flags]", env: true, about: "Prints the cluster as the node at --url sees it."}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.url, "/")+"/v1/gateway/members", nil)
	if err != nil {
		return fmt.Errorf("%w: --url: %v", errUsage, err)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the node answered %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var answer struct {
		Members []membership.Member `json:"members"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tURL\tSTATE\tPARTICIPANTS\t")
	for _, m := range answer.Members {
		name := m.Name
		if m.Self {
			name += " (self)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t\n", name, m.URL, m.State, m.Participants)
	}
	return tw.Flush()
}
