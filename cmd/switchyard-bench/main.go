package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

type options struct {
	scenario     string
	url, subURL  string
	pids         []string
	subscribers  int
	pairs        int
	connections  int
	rate         float64
	duration     time.Duration
	concurrency  int
	batch        bool
	apiKey       string
	sources      int
	messageBytes int
	drainWait    time.Duration
	jsonOnly     bool
	cpuProfile   string
	floorListen  string
	cluster      clusterOptions
}

func main() {
	var o options
	var pids string
	flag.StringVar(&o.scenario, "scenario", "fanout", "fanout, pairs, cross-node, idle or cluster")
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8787", "node that takes the submits")
	flag.StringVar(&o.subURL, "sub-url", "", "node the subscribers attach to (default --url; cross-node: another node)")
	flag.StringVar(&pids, "pid", "", "server process id(s), comma-separated, for CPU and memory from /proc")
	flag.IntVar(&o.subscribers, "subscribers", 1000, "fanout: subscribers of the one session")
	flag.IntVar(&o.pairs, "pairs", 1000, "pairs: sessions of two subscribers")
	flag.IntVar(&o.connections, "connections", 10000, "idle: connections to hold")
	flag.Float64Var(&o.rate, "rate", 0, "submits per second (0: as fast as possible)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to submit")
	flag.IntVar(&o.concurrency, "concurrency", 16, "submits in flight when going as fast as possible")
	flag.BoolVar(&o.batch, "batch", false, "subscribers attach with batch=1")
	flag.StringVar(&o.apiKey, "api-key", "", "API key")
	flag.IntVar(&o.sources, "sources", 16, "source addresses 127.0.0.1.. to spread connections over (port exhaustion)")
	flag.IntVar(&o.messageBytes, "message-bytes", 64, "message size")
	flag.DurationVar(&o.drainWait, "drain-wait", 5*time.Second, "how long to wait for deliveries after the last submit")
	flag.BoolVar(&o.jsonOnly, "json", false, "print only the JSON line")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	flag.StringVar(&o.floorListen, "floor-listen", "", "instead of a load, serve the floor server on this address until SIGTERM (docs/BENCHMARKS.md)")
	flag.StringVar(&o.cluster.bin, "switchyard", "switchyard", "cluster: the switchyard binary to start the nodes with")
	flag.IntVar(&o.cluster.nodes, "nodes", 10, "cluster: nodes to start")
	flag.IntVar(&o.cluster.basePort, "base-port", 0, "cluster: node i serves HTTP on base+i and gossip on base+10000+i (0: free ports)")
	flag.IntVar(&o.cluster.participants, "participants", 10000, "cluster: participants spread over the nodes")
	flag.IntVar(&o.cluster.sessionsPer, "sessions-per-participant", 10, "cluster: sessions each participant is in")
	flag.IntVar(&o.cluster.bigSessions, "big-agent-sessions", 1000, "cluster: sessions of the one big agent")
	flag.DurationVar(&o.cluster.idleWindow, "idle-window", 10*time.Second, "cluster: how long idle CPU is measured")
	flag.IntVar(&o.cluster.attaches, "attaches", 200, "cluster: attach → welcome samples")
	flag.IntVar(&o.cluster.joins, "joins", 50, "cluster: join samples, for a participant in few sessions and for the big agent")
	flag.IntVar(&o.cluster.agents, "agents", 50, "cluster: agents reconnecting during the rolling restart")
	flag.BoolVar(&o.cluster.skipRestart, "skip-restart", false, "cluster: skip the rolling restart")
	flag.IntVar(&o.cluster.restartNodes, "restart-nodes", 0, "cluster: how many nodes the rolling restart restarts, one after another (0: all)")
	flag.Parse()
	if o.floorListen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		l, err := net.Listen("tcp", o.floorListen)
		if err == nil {
			err = serveFloor(ctx, l)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "switchyard-bench:", err)
			os.Exit(1)
		}
		return
	}
	if o.subURL == "" {
		o.subURL = o.url
	}
	if pids != "" {
		o.pids = strings.Split(pids, ",")
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "switchyard-bench:", err)
			os.Exit(1)
		}
		defer stop()
	}
	ctx := context.Background()
	var res report
	var err error
	switch o.scenario {
	case "fanout", "cross-node":
		res, err = runFanout(ctx, o)
	case "pairs":
		res, err = runPairs(ctx, o)
	case "idle":
		res, err = runIdle(ctx, o)
	case "cluster":
		res, err = runCluster(ctx, o.cluster)
	default:
		err = fmt.Errorf("unknown scenario %q", o.scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchyard-bench:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if !o.jsonOnly {
		res.print(os.Stdout)
	}
}

// report is a scenario's figures: one JSON line, and a table for people.
type report interface{ print(w io.Writer) }

// startCPUProfile profiles the load generator itself (to keep it cheap: it
// shares the cores with the node it measures).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}
