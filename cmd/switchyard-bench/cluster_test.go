package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterScenarioOnTwoProcesses runs the cluster scenario end to end on
// two real switchyard processes, small: every phase runs and reports
// figures that hold whatever the machine's speed.
func TestClusterScenarioOnTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the switchyard binary")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the test builds the switchyard binary with the go tool")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/switchyard-gw/switchyard/cmd/switchyard").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o := clusterOptions{bin: bin, nodes: 2, participants: 40, sessionsPer: 3, bigSessions: 20,
		idleWindow: 200 * time.Millisecond, attaches: 10, joins: 5, agents: 4, workDir: t.TempDir()}
	res, err := runCluster(ctx, o)
	require.NoError(t, err)

	require.Equal(t, 40*3+20, res.PopulatePuts, "every PUT answered 200")
	require.Positive(t, res.PopulateMiB, "the nodes pushed the directory to each other")
	require.Positive(t, res.IdleRSSMiBPerNode)
	require.GreaterOrEqual(t, res.FullRSSMiBPerNode, 1.0)
	require.Zero(t, res.AttachSubmit404s, "a submit elsewhere right after the welcome found the participant")
	require.Zero(t, res.AttachSubmitOther)
	require.Positive(t, res.AttachP99ms)
	require.Positive(t, res.JoinSmallBytes, "a join is pushed to the peer")
	require.Positive(t, res.JoinBigBytes)
	require.Equal(t, 2, res.RestartedNodes)
	require.Positive(t, res.RestartReqPerSec)
	require.Zero(t, res.RestartAgentsLost, "every agent reconnected and got the event after the restart")
	require.Positive(t, res.Death502s, "the dead node's participants answered 502 until it was declared dead")
	require.Positive(t, res.DeathTo502Seconds)
}
