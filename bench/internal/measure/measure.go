// Package measure holds the small helpers vmpod's benchmarks share: medians
// and a process's resident memory.
package measure

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// RandomQcow2 returns the path of a qcow2 of sizeMiB MiB of incompressible
// data in work, making it the first time (the benchmarks share it).
func RandomQcow2(work string, sizeMiB int) (string, error) {
	img := filepath.Join(work, fmt.Sprintf("bench-%dm.qcow2", sizeMiB))
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	raw := filepath.Join(work, "bench.raw")
	defer os.Remove(raw)
	fmt.Printf("making a %d MiB qcow2 of random data (once)...\n", sizeMiB)
	if out, err := exec.Command("dd", "if=/dev/urandom", "of="+raw, "bs=1M", fmt.Sprint("count=", sizeMiB), "status=none").CombinedOutput(); err != nil {
		return "", fmt.Errorf("dd: %v: %s", err, out)
	}
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	return img, nil
}
