package libvirttools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// libvirt keeps a running domain's QEMU pid in a file under its run
// directory: /run/libvirt/qemu for qemu:///system, and
// $XDG_RUNTIME_DIR/libvirt/qemu/run for qemu:///session. The libvirt API
// itself does not tell a client QEMU's pid.

// qemuPIDFile is where libvirt at uri keeps domain name's QEMU pid.
func qemuPIDFile(uri, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("domain name %q: %w", name, errdefs.ErrInvalidArgument)
	}
	switch uri {
	case "qemu:///system":
		return filepath.Join("/run/libvirt/qemu", name+".pid"), nil
	case "qemu:///session":
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return filepath.Join(d, "libvirt/qemu/run", name+".pid"), nil
		}
	}
	return "", fmt.Errorf("vmpod finds QEMU's process only through a local libvirtd (qemu:///system or qemu:///session), not %q: %w", uri, errdefs.ErrFailedPrecondition)
}

// readQEMUPID reads a pid file and checks, in procRoot, that the process
// is domain name's QEMU (its -name argument is guest=<name>[,...]), so a
// stale file naming a reused pid is not mistaken for it.
func readQEMUPID(pidFile, procRoot, name string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("domain %s has no QEMU process (no %s; is it running?): %w", name, pidFile, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read QEMU's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("QEMU's pid file %s holds %q, not a pid: %w", pidFile, truncate(string(b), 40), errdefs.ErrInternal)
	}
	cmdline, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("domain %s: QEMU (pid %d) is gone: %w", name, pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read QEMU's command line: %w", err)
	}
	args := bytes.Split(cmdline, []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) != "-name" {
			continue
		}
		v := string(args[i+1])
		if v == "guest="+name || strings.HasPrefix(v, "guest="+name+",") {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("domain %s: pid %d from %s is not its QEMU (a stale pid file?): %w", name, pid, pidFile, errdefs.ErrNotFound)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// QEMUPID implements Connection.
func (l *Libvirt) QEMUPID(ctx context.Context, name string) (int, error) {
	f, err := qemuPIDFile(l.uri, name)
	if err != nil {
		return 0, err
	}
	return readQEMUPID(f, "/proc", name)
}

// QEMUPID implements Connection.
func (p *Pair) QEMUPID(ctx context.Context, name string) (int, error) {
	return p.quick.QEMUPID(ctx, name)
}
