package testdaemon

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeMode, set in the environment, makes the test binary a fake `vmpod
// serve` (see fakeVmpod); its value is the behaviour.
const fakeMode = "TESTDAEMON_FAKE_VMPOD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeMode); mode != "" {
		os.Exit(fakeVmpod(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeVmpod stands in for `vmpod serve`: it logs its arguments and
// VMPOD_TEST_MARK, serves CRI Version on --socket (replacing a stale socket
// file and refusing one that answers, as vmpod does) and exits 0 on SIGTERM. Modes other than "serve":
// "exit" fails at once, "mute" never listens, "stubborn" ignores SIGTERM.
func fakeVmpod(mode string, args []string) int {
	fmt.Fprintf(os.Stderr, "fake vmpod %s mark=%s\n", strings.Join(args, " "), os.Getenv("VMPOD_TEST_MARK"))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	socket := fs.String("socket", "", "")
	for _, f := range []string{"config", "state-dir", "log-level", "libvirt-uri"} {
		fs.String(f, "", "")
	}
	if len(args) == 0 || args[0] != "serve" || fs.Parse(args[1:]) != nil {
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "fake vmpod: state directory is in use")
		return 1
	case "mute":
		time.Sleep(time.Hour)
	}
	if c, err := net.Dial("unix", *socket); err == nil {
		c.Close()
		fmt.Fprintf(os.Stderr, "fake vmpod: socket %s is in use\n", *socket)
		return 1
	}
	os.Remove(*socket)
	lis, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, fakeRuntime{})
	go srv.Serve(lis)
	fmt.Fprintln(os.Stderr, "fake vmpod serving")
	if mode == "stubborn" {
		time.Sleep(time.Hour)
	}
	<-sigs
	srv.Stop()
	fmt.Fprintln(os.Stderr, "fake vmpod stopped")
	return 0
}

type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake"}, nil
}

// fake returns a daemon that runs this test binary as a fake vmpod.
func fake(t *testing.T, mode string, o Options) *Daemon {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Bin = bin
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.Env = append(o.Env, fakeMode+"="+mode)
	d := New(o)
	t.Cleanup(d.Kill)
	return d
}

func TestStartPingStop(t *testing.T) {
	d := fake(t, "serve", Options{LogLevel: "debug", Args: []string{"--libvirt-uri", "test:///default"}, Env: []string{"VMPOD_TEST_MARK=m1"}})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if !d.Running() || d.Pid() == 0 {
		t.Fatalf("after Start: running %v, pid %d", d.Running(), d.Pid())
	}
	if err := d.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := d.Start(); err == nil || !strings.Contains(err.Error(), "runs already") {
		t.Fatalf("second Start while running: %v", err)
	}
	want := fmt.Sprintf("fake vmpod serve --config /dev/null --socket %s --state-dir %s --log-level debug --libvirt-uri test:///default mark=m1",
		d.Socket(), filepath.Join(filepath.Dir(d.Socket()), "state"))
	if log := d.Log(); !strings.Contains(log, want) {
		t.Fatalf("log lacks %q:\n%s", want, log)
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d.Running() || d.ExitErr() != nil || !strings.Contains(d.LogTail(1), "fake vmpod stopped") {
		t.Fatalf("after Stop: running %v, exit %v, log tail %q", d.Running(), d.ExitErr(), d.LogTail(1))
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop of a stopped daemon: %v", err)
	}
}

func TestKillAndRestart(t *testing.T) {
	d := fake(t, "serve", Options{})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	pid := d.Pid()
	d.Kill()
	if d.Running() || d.ExitErr() == nil {
		t.Fatalf("after Kill: running %v, exit %v", d.Running(), d.ExitErr())
	}
	if _, err := os.Stat(d.Socket()); err != nil {
		t.Fatalf("kill -9 should leave the socket file: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if d.Pid() == pid {
		t.Fatal("restart kept the old pid")
	}
	if n := strings.Count(d.Log(), "fake vmpod serving"); n != 2 {
		t.Fatalf("log has %d starts, want both runs:\n%s", n, d.Log())
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSignalAndExited(t *testing.T) {
	d := fake(t, "serve", Options{})
	select {
	case <-d.Exited():
	default:
		t.Fatal("Exited of a daemon never started is open")
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10s after SIGTERM")
	}
	if d.ExitErr() != nil {
		t.Fatalf("exit after SIGTERM: %v", d.ExitErr())
	}
	if err := d.Signal(syscall.SIGTERM); err == nil {
		t.Fatal("Signal to an exited daemon succeeded")
	}
}

func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"exit", []string{"vmpod exited at start: exit status 1", "fake vmpod: state directory is in use"}},
		{"mute", []string{"did not answer CRI Version", "within 500ms", "fake vmpod serve"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			d := fake(t, tc.mode, Options{StartTimeout: 500 * time.Millisecond})
			err := d.Start()
			if err == nil {
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if d.Running() {
				t.Error("the daemon still runs after a failed Start")
			}
		})
	}
}

// TestSocketOfAnother: a second daemon on a socket that another one serves
// is not taken for ready although the socket answers.
func TestSocketOfAnother(t *testing.T) {
	first := fake(t, "serve", Options{})
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	second := fake(t, "serve", Options{Socket: first.Socket()})
	err := second.Start()
	if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "is in use") {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
	if err := first.Ping(context.Background()); err != nil {
		t.Fatalf("the first daemon: %v", err)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	d := fake(t, "stubborn", Options{StopTimeout: 300 * time.Millisecond})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err == nil || !strings.Contains(err.Error(), "did not stop within 300ms of SIGTERM; killed it") {
		t.Fatalf("Stop of a daemon that ignores SIGTERM: %v", err)
	}
	if d.Running() {
		t.Fatal("still running")
	}
}

func TestOptions(t *testing.T) {
	if err := New(Options{Dir: t.TempDir()}).Start(); err == nil || !strings.Contains(err.Error(), "Options.Bin") {
		t.Errorf("no Bin: %v", err)
	}
	if err := New(Options{Bin: "vmpod", Socket: "/s"}).Start(); err == nil || !strings.Contains(err.Error(), "Options.Dir") {
		t.Errorf("no Dir: %v", err)
	}
	d := New(Options{Dir: "/d", Socket: "rel.sock", LogPath: "/l/x.log"})
	wd, _ := os.Getwd()
	if d.Socket() != filepath.Join(wd, "rel.sock") || d.StateDir() != "/d/state" || d.LogPath() != "/l/x.log" {
		t.Errorf("socket %s, state dir %s, log %s", d.Socket(), d.StateDir(), d.LogPath())
	}
	if d.Running() || d.Pid() != 0 || d.ExitErr() != nil {
		t.Error("a daemon never started looks started")
	}
}

func TestEcho(t *testing.T) {
	// Read only once the daemon has exited: cmd.Wait has then joined the
	// goroutine that writes it.
	var echo strings.Builder
	d := fake(t, "serve", Options{Echo: &echo})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := echo.String(); got != d.Log() || !strings.Contains(got, "fake vmpod stopped") {
		t.Fatalf("echoed %q, logged %q", got, d.Log())
	}
}
