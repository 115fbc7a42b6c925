// Package e2e drives the real vmpod binary with crictl against real
// libvirtd, QEMU, qemu-img and local HTTP servers. It needs root and a
// running libvirtd (hack/start-libvirt.sh) and runs only when VMPOD_E2E=1;
// hack/test.sh sets that up.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmpod/vmpod/internal/testdaemon"
)

var vmpodBin string

func TestMain(m *testing.M) {
	if os.Getenv("VMPOD_E2E") != "1" {
		fmt.Println("e2e: skipped (set VMPOD_E2E=1; hack/test.sh does, after installing and starting what the tests need)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "vmpod-e2e-bin-")
	if err != nil {
		panic(err)
	}
	if vmpodBin, err = testdaemon.Build(dir); err != nil {
		fmt.Println("e2e:", err)
		os.Exit(1)
	}
	cleanupCNI, err := setupCNI()
	if err != nil {
		fmt.Println("e2e: CNI config:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanupCNI()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one test's `vmpod serve`, with its own image translations
// directory and a crictl config for its socket.
type daemon struct {
	*testdaemon.Daemon
	t            *testing.T
	dir          string
	translations string
	crictlConfig string
}

type daemonOpts struct {
	extraEnv []string
	// bin is the vmpod binary; default: the one TestMain built.
	bin string
}

// startDaemon starts vmpod with its own socket, state and translations
// directories and waits until it answers Version; the test's end stops it.
func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	dir := t.TempDir()
	// QEMU runs as libvirt-qemu and must reach the VMs' disks under the
	// state dir: open the test's private temp dirs for traversal.
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	// Short: per-VM serial sockets live beside it and unix socket paths
	// are limited to 107 bytes.
	run, err := os.MkdirTemp("", "vp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	d := &daemon{t: t, dir: dir, translations: filepath.Join(dir, "images.d"), crictlConfig: filepath.Join(dir, "crictl.yaml")}
	env := []string{"VMPOD_IMAGE_TRANSLATIONS_DIR=" + d.translations, "VMPOD_PULL_PROGRESS_INTERVAL=1s",
		// Nested KVM is broken on the test machines: run guests under TCG.
		"VMPOD_ACCELERATOR=tcg", "VMPOD_TCG_TB_CACHE_MIB=256",
		// Every pod joins the tests' private CNI bridge (setupCNI).
		"VMPOD_CNI_CONF_DIR=" + cniConfDir}
	bin := vmpodBin
	if o.bin != "" {
		bin = o.bin
	}
	d.Daemon = testdaemon.New(testdaemon.Options{Bin: bin, Dir: dir, Socket: filepath.Join(run, "vmpod.sock"),
		LogLevel: "debug", Env: append(env, o.extraEnv...)})
	if err := os.MkdirAll(d.translations, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n", d.Socket(), d.Socket())
	if err := os.WriteFile(d.crictlConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.mustStop)
	return d
}

// mustStop stops vmpod with SIGTERM and fails the test unless it exits
// cleanly in time.
func (d *daemon) mustStop() {
	if err := d.Stop(); err != nil {
		d.t.Errorf("%v\n%s", err, d.Log())
	}
}

// crictl runs crictl against this daemon.
func (d *daemon) crictl(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"--config", d.crictlConfig}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// mustCrictl runs crictl and fails the test on error.
func (d *daemon) mustCrictl(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.crictl(args...)
	if err != nil {
		d.t.Fatalf("crictl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// failCrictl runs crictl, expects it to fail and returns its stderr.
func (d *daemon) failCrictl(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.crictl(args...)
	if err == nil {
		d.t.Fatalf("crictl %s succeeded, want failure\n%s", strings.Join(args, " "), out)
	}
	return errOut
}

// writeTranslations writes one translation file into the daemon's dir.
func (d *daemon) writeTranslations(name, body string) {
	d.t.Helper()
	if err := os.WriteFile(filepath.Join(d.translations, name), []byte(body), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// fileServer serves a directory over HTTP on 127.0.0.1, counting the GET
// requests per path; delay slows every response body by that much.
type fileServer struct {
	*httptest.Server
	dir   string
	mu    sync.Mutex
	gets  map[string]int
	delay atomic.Int64
}

func newFileServer(t *testing.T) *fileServer {
	t.Helper()
	fs := &fileServer{dir: t.TempDir(), gets: map[string]int{}}
	files := http.FileServer(http.Dir(fs.dir))
	fs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		fs.gets[r.URL.Path]++
		fs.mu.Unlock()
		if d := time.Duration(fs.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		files.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs.Listener = l
	fs.Start()
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) count(path string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.gets[path]
}

func (fs *fileServer) path(name string) string { return filepath.Join(fs.dir, name) }

// run runs a command and fails the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// execCommandTimeout is exec.Command bounded by a timeout.
func execCommandTimeout(d time.Duration, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return exec.CommandContext(ctx, name, args...)
}
