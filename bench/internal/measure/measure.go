// Package measure holds what vmpod's benchmarks share: the statistics they
// print (one definition of median and percentile for all), a process's
// memory, a throwaway vmpod, a private CNI network and the test guest
// pulled into it.
package measure

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
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

// Vmpod is a throwaway vmpod daemon for a benchmark run, on its own socket
// and state directory under a fresh directory of work.
type Vmpod struct {
	Dir  string
	cmd  *exec.Cmd
	sock string
}

// StartVmpod starts bin serving in a new directory under work with env
// added (dir is substituted for "{dir}" in env values) and waits until it
// answers crictl version.
func StartVmpod(bin, work string, env ...string) (*Vmpod, error) {
	dir, err := os.MkdirTemp(work, "vmpod-")
	if err != nil {
		return nil, err
	}
	// vmpod's host check wants QEMU to reach its state dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	v := &Vmpod{Dir: dir, sock: filepath.Join(dir, "v.sock")}
	v.cmd = exec.Command(bin, "serve", "--config", "/dev/null", "--socket", v.sock, "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn")
	v.cmd.Env = os.Environ()
	for _, e := range env {
		v.cmd.Env = append(v.cmd.Env, strings.ReplaceAll(e, "{dir}", dir))
	}
	v.cmd.Stderr = os.Stderr
	if err := v.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for i := 0; v.Crictl("version") != nil; i++ {
		if i > 100 {
			v.Stop()
			return nil, fmt.Errorf("vmpod did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return v, nil
}

// Crictl runs crictl against the daemon (10-minute bound).
func (v *Vmpod) Crictl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, "crictl", append([]string{"-r", "unix://" + v.sock, "-i", "unix://" + v.sock, "-t", "600s"}, args...)...).Run()
}

// CrictlOutput runs crictl against the daemon and returns its standard
// output (10-minute bound).
func (v *Vmpod) CrictlOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"-r", "unix://" + v.sock, "-i", "unix://" + v.sock, "-t", "600s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Pid is the daemon's process ID.
func (v *Vmpod) Pid() int { return v.cmd.Process.Pid }

// Stop ends the daemon with SIGTERM and removes its directory.
func (v *Vmpod) Stop() {
	v.cmd.Process.Signal(syscall.SIGTERM)
	v.cmd.Wait()
	os.RemoveAll(v.Dir)
}
