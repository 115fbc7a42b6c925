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
	"syscall"
	"testing"
	"time"
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
	vmpodBin = filepath.Join(dir, "vmpod")
	build := exec.Command("go", "build", "-o", vmpodBin, "github.com/vmpod/vmpod/cmd/vmpod")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: build vmpod:", err)
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

// daemon is one running `vmpod serve`.
type daemon struct {
	t            *testing.T
	dir          string
	socket       string
	stateDir     string
	translations string
	crictlConfig string
	cmd          *exec.Cmd
	logPath      string
	exited       chan error
}

type daemonOpts struct {
	stateDir string
	socket   string
	extraEnv []string
}

// startDaemon starts vmpod with its own socket, state and translations
// directories and waits until it answers Version.
func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	dir := t.TempDir()
	// QEMU runs as libvirt-qemu and must reach the VMs' disks under the
	// state dir: open the test's private temp dirs for traversal.
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	d := &daemon{t: t, dir: dir, socket: o.socket, stateDir: o.stateDir,
		translations: filepath.Join(dir, "images.d"), logPath: filepath.Join(dir, "vmpod.log")}
	if d.socket == "" {
		// Short: per-VM serial sockets live beside it and unix socket
		// paths are limited to 107 bytes.
		run, err := os.MkdirTemp("", "vp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(run) })
		d.socket = filepath.Join(run, "vmpod.sock")
	}
	if d.stateDir == "" {
		d.stateDir = filepath.Join(dir, "state")
	}
	if err := os.MkdirAll(d.translations, 0o755); err != nil {
		t.Fatal(err)
	}
	d.crictlConfig = filepath.Join(dir, "crictl.yaml")
	cfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n", d.socket, d.socket)
	if err := os.WriteFile(d.crictlConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.start(o.extraEnv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) start(extraEnv []string) error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(vmpodBin, "serve", "--config", "/dev/null", "--socket", d.socket, "--state-dir", d.stateDir, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "VMPOD_IMAGE_TRANSLATIONS_DIR="+d.translations, "VMPOD_PULL_PROGRESS_INTERVAL=1s",
		// Nested KVM is broken on the test machines: run guests under TCG.
		"VMPOD_ACCELERATOR=tcg", "VMPOD_TCG_TB_CACHE_MIB=256",
		// Every pod joins the tests' private CNI bridge (setupCNI).
		"VMPOD_CNI_CONF_DIR="+cniConfDir)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	d.exited = make(chan error, 1)
	go func() { d.exited <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.exited:
			d.exited <- err
			return fmt.Errorf("vmpod exited at start: %v\n%s", err, d.log())
		default:
		}
		if _, _, err := d.crictl("version"); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("vmpod did not answer in 30s\n%s", d.log())
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Errorf("vmpod exited with %v after SIGTERM\n%s", err, d.log())
		}
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		d.t.Errorf("vmpod did not stop within 60s of SIGTERM\n%s", d.log())
	}
}

// kill9 kills the daemon without letting it clean up.
func (d *daemon) kill9() {
	d.cmd.Process.Kill()
	<-d.exited
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
