// Package measure holds the small helpers vmpod's benchmarks share: medians
// and a process's resident memory.
package measure

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Median returns the median of ds (the upper one for an even count).
func Median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// MedianInt returns the median of v (the upper one for an even count).
func MedianInt(v []int) int {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// ProcStatus returns VmRSS and VmHWM (peak RSS) of pid in KiB.
func ProcStatus(pid int) (rss, hwm int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			fmt.Sscan(f[1], &rss)
		case "VmHWM:":
			fmt.Sscan(f[1], &hwm)
		}
	}
	return rss, hwm, nil
}
