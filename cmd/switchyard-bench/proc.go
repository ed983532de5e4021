package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procSample is a process's CPU time and memory from /proc.
type procSample struct {
	cpu   time.Duration // user + system
	sys   time.Duration // system: the time spent in the kernel on the process's behalf
	rss   int64         // bytes
	hwm   int64         // peak RSS, bytes
	taken time.Time
}

// clockTick is USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

func sampleProc(pid string) (procSample, error) {
	s := procSample{taken: time.Now()}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return s, err
	}
	// Fields after the command (which may hold spaces) start after ')'.
	text := string(stat)
	fields := strings.Fields(text[strings.LastIndexByte(text, ')')+2:])
	if len(fields) < 13 {
		return s, fmt.Errorf("unexpected /proc/%s/stat", pid)
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	s.cpu = time.Duration(utime+stime) * clockTick
	s.sys = time.Duration(stime) * clockTick
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			s.rss = kb << 10
		case "VmHWM:":
			s.hwm = kb << 10
		}
	}
	return s, nil
}
