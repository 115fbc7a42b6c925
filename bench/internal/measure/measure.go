// Package measure holds what vmpod's benchmarks share: the statistics they
// print (one definition of median and percentile for all), a process's
// memory, a throwaway vmpod, a private CNI network and the test guest
// pulled into it.
package measure

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

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
