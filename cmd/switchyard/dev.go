package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/switchyard-gw/switchyard/membership"
	"github.com/switchyard-gw/switchyard/sidecar"
)

// devCommand runs a three-node cluster in one process on loopback, for
// trying things out: HTTP on --base-port and the next two ports, gossip on
// free ports, every node joining the first.
func devCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev")
	basePort := fs.Int("base-port", 8787, "HTTP port of node 1; nodes 2 and 3 take the next ports (0: free ports)")
	nodes := fs.Int("nodes", 3, "how many nodes")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	cmd := command{name: "dev", synopsis: "[flags]", env: true,
		about: "Runs a cluster of nodes in one process on loopback, for trying things out."}
	if err := cmd.parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, stop := signalContext(logger)
	defer stop()

	var running []*sidecar.Node
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(running) - 1; i >= 0; i-- {
			_ = running[i].Shutdown(sctx)
		}
	}()
	seed := ""
	for i := range *nodes {
		port := 0
		if *basePort != 0 {
			port = *basePort + i
		}
		gc := &membership.GossipConfig{Bind: "127.0.0.1:0", RejoinInterval: 5 * time.Second}
		if seed != "" {
			gc.Join = []string{seed}
		}
		node, err := sidecar.New(sidecar.Config{
			Listen:   "127.0.0.1:" + strconv.Itoa(port),
			NodeName: "dev-" + strconv.Itoa(i+1),
			Gossip:   gc,
			Version:  versionString(),
			Logger:   logger,
		})
		if err != nil {
			return fmt.Errorf("start node %d: %w", i+1, err)
		}
		node.Start()
		running = append(running, node)
		if seed == "" {
			seed = node.GossipAddr()
		}
		fmt.Fprintf(stdout, "node %d: %s  (name %s, gossip %s)\n", i+1, node.URL(), node.Name(), node.GossipAddr())
	}
	fmt.Fprintln(stdout, "three nodes on loopback; Ctrl-C stops them. Try:")
	fmt.Fprintf(stdout, "  switchyard listen --url %s --participant-id bob --session-id s1\n", running[min(1, len(running)-1)].URL())
	fmt.Fprintf(stdout, "  switchyard send --url %s --sender-id alice --session-id s1 --message hi\n", running[0].URL())
	<-ctx.Done()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}
