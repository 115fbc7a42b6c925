package measure

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Proc is what the benchmarks read of a process: its resident memory now
// and at its peak (KiB), the anonymous part of it (KiB: heap, stacks,
// mappings of no file; the rest are pages of the binary and libraries,
// which vary with the page cache), its threads and its open file
// descriptors.
type Proc struct {
	RSS, HWM, Anon, Threads, FDs int
}

// ReadProc reads VmRSS, VmHWM, RssAnon and Threads from /proc/PID/status and counts
// /proc/PID/fd.
func ReadProc(pid int) (Proc, error) {
	var ps Proc
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			fmt.Sscan(f[1], &ps.RSS)
		case "VmHWM:":
			fmt.Sscan(f[1], &ps.HWM)
		case "RssAnon:":
			fmt.Sscan(f[1], &ps.Anon)
		case "Threads:":
			fmt.Sscan(f[1], &ps.Threads)
		}
	}
	if es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		ps.FDs = len(es)
	}
	return ps, nil
}

// CPUTime is a process's user and system time from /proc/PID/stat, 0
// when unreadable.
func CPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces, in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// SmapsRollup returns the fields of /proc/PID/smaps_rollup in KiB (Rss,
// Pss, Pss_Anon, Pss_File, ...).
func SmapsRollup(pid int) (map[string]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			var v int
			fmt.Sscan(f[1], &v)
			m[strings.TrimSuffix(f[0], ":")] = v
		}
	}
	return m, nil
}

// LoadAvg returns the 1, 5 and 15-minute load averages, "?" when
// unreadable.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
