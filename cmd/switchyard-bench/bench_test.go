package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchyard-gw/switchyard/internal/testkit"
	"github.com/switchyard-gw/switchyard/sidecar"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startNode(t *testing.T) string {
	t.Helper()
	node, err := sidecar.New(sidecar.Config{Listen: "127.0.0.1:0", Logger: testkit.Logger(), RateLimit: -1})
	require.NoError(t, err)
	testkit.Start(t, node)
	return node.URL()
}

// startFloor runs the floor server on a free loopback port.
func startFloor(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveFloor(ctx, l) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	require.Eventually(t, func() bool {
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
	return "http://" + addr
}

func shortRun(url string) options {
	return options{url: url, subURL: url, pids: []string{fmt.Sprint(os.Getpid())}, subscribers: 20, pairs: 10,
		connections: 30, duration: 300 * time.Millisecond, concurrency: 4, sources: 2, messageBytes: 64,
		// collect stops waiting once every delivery is in: the wait only
		// bounds a failure, and a loaded machine may need seconds.
		drainWait: time.Minute}
}

// requireEveryDelivery: the scenario's figures add up, with nothing lost
// or duplicated.
func requireEveryDelivery(t *testing.T, r result, perEvent int64) {
	t.Helper()
	require.Zero(t, r.SubmitErrors)
	require.Positive(t, r.EventsSent)
	require.Equal(t, r.EventsSent*perEvent, r.Deliveries)
	require.Zero(t, r.Lost)
	require.Zero(t, r.Duplicates)
	require.Positive(t, r.P50ms)
	require.GreaterOrEqual(t, r.MaxMs, r.P99ms)
	require.GreaterOrEqual(t, r.P99ms, r.P50ms)
	// /proc counts CPU time in clock ticks of 10 ms: a run this short may
	// read 0 of either. TestMeasureReadsTheServersCPUFromProc checks the
	// figures against getrusage; here they only have to add up.
	require.GreaterOrEqual(t, r.ServerSysCPUSec, 0.0)
	require.LessOrEqual(t, r.ServerSysCPUSec, r.ServerCPUSec, "the kernel time is part of the total")
	require.Positive(t, r.ServerPeakRSSMiB)
}

// TestScenariosAgainstANode runs each scenario against a node of its own:
// the scenarios attach the same participant names, and a reconnect without
// resume_from may get again the last events a closed connection received
// (the node records what it wrote once the write returns), which would
// count in the next scenario's deliveries.
func TestScenariosAgainstANode(t *testing.T) {
	ctx := context.Background()
	t.Run("fanout with batch=1", func(t *testing.T) {
		o := shortRun(startNode(t))
		o.scenario, o.batch = "fanout", true
		r, err := runFanout(ctx, o)
		require.NoError(t, err)
		requireEveryDelivery(t, r, 20)
	})
	t.Run("pairs at a fixed rate", func(t *testing.T) {
		o := shortRun(startNode(t))
		o.rate = 200
		r, err := runPairs(ctx, o)
		require.NoError(t, err)
		requireEveryDelivery(t, r, 2)
		require.LessOrEqual(t, r.EventsSent, int64(61), "at most 200 per second for 300 ms")
	})
	t.Run("idle", func(t *testing.T) {
		o := shortRun(startNode(t))
		r, err := runIdle(ctx, o)
		require.NoError(t, err)
		require.Equal(t, 30, r.Subscribers)
	})
}

func TestScenariosAgainstTheFloorServer(t *testing.T) {
	url := startFloor(t)
	o := shortRun(url)
	r, err := runPairs(context.Background(), o)
	require.NoError(t, err)
	requireEveryDelivery(t, r, 2)
	o.scenario = "fanout"
	r, err = runFanout(context.Background(), o)
	require.NoError(t, err)
	requireEveryDelivery(t, r, 20)
}
