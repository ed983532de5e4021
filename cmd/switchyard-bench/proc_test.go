package main

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cpuTimes is this process's user and system CPU time as getrusage reports
// them: the same kernel figures /proc/<pid>/stat shows, in microseconds
// rather than clock ticks.
type cpuTimes struct{ user, sys time.Duration }

func rusage(t *testing.T) cpuTimes {
	t.Helper()
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return cpuTimes{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

// spendCPU works until the kernel has counted at least user of user time
// and sys of system time for this process since from. It awaits the
// kernel's own accounting, not a duration: however loaded the machine, the
// work is done when the kernel says so.
func spendCPU(t *testing.T, from cpuTimes, user, sys time.Duration) {
	t.Helper()
	zero, err := os.Open("/dev/zero")
	require.NoError(t, err)
	defer zero.Close()
	buf := make([]byte, 1<<20)
	for rusage(t).sys < from.sys+sys {
		_, err := zero.Read(buf) // the kernel clears 1 MiB: system time
		require.NoError(t, err)
	}
	x := uint64(1)
	for rusage(t).user < from.user+user {
		for range 100000 { // user time
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	require.NotZero(t, x|1)
}

// TestMeasureReadsTheServersCPUFromProc: the CPU figures of a scenario are
// the server's, read from /proc, in seconds, the kernel's share apart. The
// "server" here is the test process, which does a known amount of work of
// each kind; getrusage is the reference. /proc counts in clock ticks of
// 10 ms, truncated, so each figure may be off by a tick (the total, the sum
// of two truncated figures, by two).
func TestMeasureReadsTheServersCPUFromProc(t *testing.T) {
	const (
		userWork = 200 * time.Millisecond
		sysWork  = 50 * time.Millisecond
	)
	before := rusage(t)
	m := startMeasure([]string{fmt.Sprint(os.Getpid())})
	start := rusage(t)
	spendCPU(t, start, userWork, sysWork)
	var r result
	m.finish(&r)
	after := rusage(t)

	sec := func(d time.Duration) float64 { return d.Seconds() }
	// Between start and the last sample, at least the work was done; from
	// before to after, at most what getrusage saw.
	require.Greater(t, r.ServerSysCPUSec, sec(sysWork-clockTick), "the kernel time is read")
	require.Less(t, r.ServerSysCPUSec, sec(after.sys-before.sys+clockTick), "only the kernel time")
	require.Greater(t, r.ServerCPUSec, sec(userWork+sysWork-2*clockTick), "user and kernel time are read")
	require.Less(t, r.ServerCPUSec, sec(after.user+after.sys-before.user-before.sys+2*clockTick), "user and kernel time, once each")
	require.Positive(t, r.ServerRSSMiB)
}

// TestSampleProcOfAMissingProcess: a pid that is gone is an error, not zeros.
func TestSampleProcOfAMissingProcess(t *testing.T) {
	_, err := sampleProc("0")
	require.Error(t, err)
}
