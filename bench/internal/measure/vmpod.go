package measure

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vmpod/vmpod/internal/testdaemon"
)

// Vmpod is a throwaway vmpod daemon for a benchmark run, on its own socket
// and state directory under a fresh directory of work.
type Vmpod struct {
	*testdaemon.Daemon
	Dir string
}

// StartVmpod starts bin serving in a new directory under work with env
// added (dir is substituted for "{dir}" in env values), its log level warn
// and its output also on standard error, and waits until it answers CRI
// Version.
func StartVmpod(bin, work string, env ...string) (*Vmpod, error) {
	dir, err := os.MkdirTemp(work, "vmpod-")
	if err != nil {
		return nil, err
	}
	// vmpod's host check wants QEMU to reach its state dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	o := testdaemon.Options{Bin: bin, Dir: dir, LogLevel: "warn", Echo: os.Stderr}
	for _, e := range env {
		o.Env = append(o.Env, strings.ReplaceAll(e, "{dir}", dir))
	}
	v := &Vmpod{Daemon: testdaemon.New(o), Dir: dir}
	if err := v.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return v, nil
}

// Crictl runs crictl against the daemon (10-minute bound).
func (v *Vmpod) Crictl(args ...string) error {
	_, err := v.CrictlOutput(args...)
	return err
}

// CrictlOutput runs crictl against the daemon and returns its standard
// output (10-minute bound).
func (v *Vmpod) CrictlOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sock := "unix://" + v.Socket()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"-r", sock, "-i", sock, "-t", "600s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Close stops the daemon with SIGTERM and removes its directory.
func (v *Vmpod) Close() {
	v.Stop()
	os.RemoveAll(v.Dir)
}
