package libvirttools

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestReadQEMUPID(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	cmdline := func(pid string, args ...string) {
		os.MkdirAll(filepath.Join(proc, pid), 0o755)
		os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(strings.Join(args, "\x00")+"\x00"), 0o644)
	}
	cmdline("4242", "/usr/bin/qemu-system-x86_64", "-name", "guest=vmpod-abc,debug-threads=on", "-S")
	cmdline("4343", "/usr/bin/qemu-system-x86_64", "-name", "guest=vmpod-abcd,debug-threads=on")
	cmdline("4444", "/bin/sleep", "guest=vmpod-abc")
	pidFile := func(content string) string {
		p := filepath.Join(dir, "vmpod-abc.pid")
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	if pid, err := readQEMUPID(pidFile("4242"), proc, "vmpod-abc"); err != nil || pid != 4242 {
		t.Errorf("pid %d, %v", pid, err)
	}
	for content, want := range map[string]error{
		"4343":  errdefs.ErrNotFound, // another domain's QEMU (a name prefix)
		"4444":  errdefs.ErrNotFound, // not QEMU
		"4545":  errdefs.ErrNotFound, // gone
		"1":     errdefs.ErrInternal,
		"x":     errdefs.ErrInternal,
		"":      errdefs.ErrInternal,
		"-4242": errdefs.ErrInternal,
	} {
		if _, err := readQEMUPID(pidFile(content), proc, "vmpod-abc"); !errors.Is(err, want) {
			t.Errorf("pid file %q: %v, want %v", content, err, want)
		}
	}
	if _, err := readQEMUPID(filepath.Join(dir, "none.pid"), proc, "vmpod-abc"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("no pid file: %v", err)
	}
}

func TestQEMUPIDFile(t *testing.T) {
	if f, err := qemuPIDFile("qemu:///system", "vmpod-abc"); err != nil || f != "/run/libvirt/qemu/vmpod-abc.pid" {
		t.Errorf("system: %q %v", f, err)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if f, err := qemuPIDFile("qemu:///session", "vmpod-abc"); err != nil || f != "/run/user/1000/libvirt/qemu/run/vmpod-abc.pid" {
		t.Errorf("session: %q %v", f, err)
	}
	if _, err := qemuPIDFile("qemu+ssh://host/system", "vmpod-abc"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("remote: %v", err)
	}
	if _, err := qemuPIDFile("qemu:///system", "../etc/x"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a name with a slash: %v", err)
	}
}
