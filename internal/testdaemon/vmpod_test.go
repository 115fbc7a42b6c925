package testdaemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRealVmpod runs the real `vmpod serve` through the harness: start,
// Version, kill -9, restart on the stale socket, graceful stop. libvirt is
// pointed at a socket that does not exist, so the daemon never touches a
// libvirtd of this machine (it answers Version and waits for libvirt before
// recovering state). It builds vmpod, so -short skips it.
func TestRealVmpod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds vmpod")
	}
	bin, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vp") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := New(Options{Bin: bin, Dir: dir, LogLevel: "debug",
		Args: []string{"--libvirt-uri", "qemu+unix:///system?socket=" + filepath.Join(dir, "no-libvirt-sock")},
		Env:  []string{"VMPOD_IMAGE_TRANSLATIONS_DIR=" + filepath.Join(dir, "images.d"), "VMPOD_CNI_CONF_DIR=" + filepath.Join(dir, "net.d")}})
	t.Cleanup(d.Kill)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Kill()
	if _, err := os.Stat(d.Socket()); err != nil {
		t.Fatalf("kill -9 should leave the socket file: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("restart on the stale socket: %v", err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	log := d.Log()
	if n := strings.Count(log, `msg="starting vmpod"`); n != 2 || !strings.Contains(log, "vmpod stopped") {
		t.Fatalf("log: %d starts (want 2), clean stop %v:\n%s", n, strings.Contains(log, "vmpod stopped"), log)
	}
	if _, err := os.Stat(d.Socket()); !os.IsNotExist(err) {
		t.Fatalf("socket after a graceful stop: %v", err)
	}
}
