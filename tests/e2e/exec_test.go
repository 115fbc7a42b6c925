package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestExecSyncThroughGuestAgent(t *testing.T) {
	e := newVMEnv(t)
	f, ctrID := e.bootVM("exec", nil)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 10*time.Second)

	if out := e.mustCrictl("exec", "-s", ctrID, "cat", "/etc/hostname"); strings.TrimSpace(out) != "exec" {
		t.Fatalf("cat /etc/hostname = %q, want the pod's hostname", out)
	}
	// stdout and stderr stay apart (crictl prints both on its stdout, so
	// ask over the CRI directly).
	conn, err := grpc.NewClient("unix://"+e.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{
		ContainerId: ctrID, Cmd: []string{"sh", "-c", "echo to-out; echo to-err >&2; exit 4"},
	})
	if err != nil || string(resp.Stdout) != "to-out\n" || string(resp.Stderr) != "to-err\n" || resp.ExitCode != 4 {
		t.Fatalf("ExecSync = %+v, %v", resp, err)
	}
	// The exit code propagates through crictl.
	// (crictl itself exits 1 and names the command's code.)
	_, exitErrOut, err := e.crictl("exec", "-s", ctrID, "sh", "-c", "exit 3")
	if err == nil || !strings.Contains(exitErrOut, "exited with 3") {
		t.Fatalf("exit 3: %v\n%s", err, exitErrOut)
	}
	// A timeout returns in about the timeout.
	start := time.Now()
	_, errOut, err := e.crictl("exec", "-s", "--timeout", "2", ctrID, "sleep", "30")
	took := time.Since(start)
	if err == nil || took > 15*time.Second {
		t.Fatalf("sleep 30 with a 2 s timeout: err %v after %v", err, took)
	}
	if !strings.Contains(errOut, "DeadlineExceeded") && !strings.Contains(errOut, "timeout") {
		t.Fatalf("timeout error: %s", errOut)
	}
	// The VM keeps running.
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("after exec: %+v", ci.Status)
	}

	// Stats of the running VM: CPU and memory are not zero.
	var stats struct {
		Stats []struct {
			Attributes struct{ ID string }
			CPU        struct {
				UsageCoreNanoSeconds struct{ Value string }
			}
			Memory struct {
				WorkingSetBytes struct{ Value string }
			}
		}
	}
	if err := json.Unmarshal([]byte(e.mustCrictl("stats", "-o", "json")), &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Stats) != 1 || stats.Stats[0].CPU.UsageCoreNanoSeconds.Value == "" || stats.Stats[0].CPU.UsageCoreNanoSeconds.Value == "0" ||
		stats.Stats[0].Memory.WorkingSetBytes.Value == "" || stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
		t.Fatalf("crictl stats: %+v", stats)
	}
	if out := e.mustCrictl("statsp"); !strings.Contains(out, "exec") {
		t.Fatalf("crictl statsp:\n%s", out)
	}
}

func TestExecStreaming(t *testing.T) {
	e := newVMEnv(t)
	f, ctrID := e.bootVM("exec-stream", nil)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 10*time.Second)

	// Non-TTY: output, stdin (read to EOF first), stdout and stderr apart,
	// exit codes.
	if out := e.mustCrictl("exec", ctrID, "cat", "/etc/hostname"); out != "exec-stream\n" {
		t.Fatalf("crictl exec cat /etc/hostname = %q", out)
	}
	t.Logf("crictl exec %s cat /etc/hostname -> %q", ctrID[:12], "exec-stream\n")
	if out := e.crictlIn(t, "hi\n", "exec", "-i", ctrID, "cat"); out != "hi\n" {
		t.Fatalf("echo hi | crictl exec -i cat = %q", out)
	}
	t.Logf("echo hi | crictl exec -i %s cat -> %q", ctrID[:12], "hi\n")
	// stdin is given to the guest agent in one message: 128 KiB at most.
	if out := e.crictlIn(t, strings.Repeat("y", 128<<10), "exec", "-i", ctrID, "wc", "-c"); strings.TrimSpace(out) != "131072" {
		t.Fatalf("128 KiB of stdin: wc -c = %q", out)
	}
	_, errOut, err := e.crictlStdin(strings.Repeat("y", 128<<10+1), "exec", "-i", ctrID, "wc", "-c")
	if err == nil || !strings.Contains(errOut, "limited to 131072 bytes") {
		t.Fatalf("128 KiB + 1 of stdin: %v\n%s", err, errOut)
	}
	out, errOut, err := e.crictl("exec", ctrID, "sh", "-c", "echo to-out; echo to-err >&2")
	if err != nil || out != "to-out\n" || !strings.Contains(errOut, "to-err") || strings.Contains(out, "to-err") {
		t.Fatalf("stdout/stderr: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	_, errOut, err = e.crictl("exec", ctrID, "sh", "-c", "exit 3")
	if err == nil || !strings.Contains(errOut, "command terminated with exit code 3") {
		t.Fatalf("exit 3: %v\n%s", err, errOut)
	}
	t.Logf("crictl exec %s sh -c 'exit 3' -> %v: %s", ctrID[:12], err, strings.TrimSpace(errOut))

	// What qemu-ga gives while a process runs: output arrives only when
	// it exited.
	start := time.Now()
	first, all := e.crictlTimed(t, "exec", ctrID, "sh", "-c", "echo early; sleep 3; echo late")
	if all != "early\nlate\n" {
		t.Fatalf("early/late = %q", all)
	}
	t.Logf("non-TTY output 'early' (printed at once, then sleep 3) reached the client after %v (the whole run took %v)",
		first.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	if first < 2500*time.Millisecond {
		t.Errorf("output arrived after %v, before the process exited: qemu-ga streams after all? update the docs", first)
	}

	// TTY: an interactive shell on a pseudo-terminal, window size and
	// resize, exit code.
	p := e.startPTY(t, 40, 120, "exec", "-it", ctrID, "sh")
	p.expect(t, regexp.MustCompile(`# (\x1b\[6n)?$`), 60*time.Second) // busybox ash asks where the cursor is
	p.send(t, "stty size\r")
	p.expect(t, regexp.MustCompile(`\r\n40 120\r\n`), 30*time.Second)
	p.resize(t, 50, 132)
	time.Sleep(time.Second) // crictl sends the size, vmpod runs stty in the guest
	p.send(t, "stty size; tty; echo $TERM\r")
	p.expect(t, regexp.MustCompile(`\r\n50 132\r\n/dev/pts/\d+\r\nxterm\r\n`), 30*time.Second)
	p.send(t, "echo $((6*7)); exit\r")
	p.expect(t, regexp.MustCompile(`\r\n42\r\n`), 30*time.Second)
	if err := p.wait(t); err != nil {
		t.Fatalf("crictl exec -it sh: %v\n%q", err, p.output())
	}
	t.Logf("crictl exec -it %s sh: %q", ctrID[:12], p.output())
	p = e.startPTY(t, 24, 80, "exec", "-it", ctrID, "sh", "-c", "echo in-a-tty; exit 5")
	p.expect(t, regexp.MustCompile(`in-a-tty\r\n`), 60*time.Second)
	if err := p.wait(t); err == nil || !strings.Contains(p.output(), "command terminated with exit code 5") {
		t.Fatalf("TTY exit 5: %v\n%q", err, p.output())
	}
	t.Logf("crictl exec -it %s sh -c 'echo in-a-tty; exit 5': %q", ctrID[:12], p.output())

	// Two TTY sessions at once, each on its own exec channel.
	p1 := e.startPTY(t, 24, 80, "exec", "-it", ctrID, "sh")
	p2 := e.startPTY(t, 24, 80, "exec", "-it", ctrID, "sh")
	p1.expect(t, regexp.MustCompile(`# (\x1b\[6n)?$`), 60*time.Second)
	p2.expect(t, regexp.MustCompile(`# (\x1b\[6n)?$`), 60*time.Second)
	p1.send(t, "echo one-$((1+1)); tty; exit\r")
	p2.send(t, "echo two-$((2+2)); tty; exit\r")
	p1.expect(t, regexp.MustCompile(`\r\none-2\r\n/dev/pts/\d+\r\n`), 30*time.Second)
	p2.expect(t, regexp.MustCompile(`\r\ntwo-4\r\n/dev/pts/\d+\r\n`), 30*time.Second)
	if err1, err2 := p1.wait(t), p2.wait(t); err1 != nil || err2 != nil {
		t.Fatalf("two TTY sessions: %v %v\n%q\n%q", err1, err2, p1.output(), p2.output())
	}

	// A client that goes away takes its guest process along, TTY or not.
	for _, tc := range []struct {
		args []string
		tty  bool
		proc string
	}{
		{[]string{"exec", ctrID, "sleep", "301"}, false, "sleep 301"},
		{[]string{"exec", "-it", ctrID, "sleep", "302"}, true, "sleep 302"},
	} {
		var kill func()
		if tc.tty {
			p := e.startPTY(t, 24, 80, tc.args...)
			kill = func() { p.cmd.Process.Kill(); p.cmd.Wait() }
		} else {
			cmd := exec.Command("crictl", append([]string{"--config", e.crictlConfig}, tc.args...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			kill = func() { cmd.Process.Kill(); cmd.Wait() }
		}
		e.waitGuestProcs(t, ctrID, tc.proc, true, 60*time.Second)
		kill()
		took := e.waitGuestProcs(t, ctrID, tc.proc, false, 30*time.Second)
		t.Logf("%q: the guest process was gone %v after crictl was killed", tc.proc, took.Round(100*time.Millisecond))
	}
	for _, l := range strings.Split(e.Log(), "\n") {
		if strings.Contains(l, "exec failed") && strings.Contains(l, "sleep 30") {
			t.Logf("vmpod: %s", l)
		}
	}

	// The exec channels are free again: a TTY exec still works.
	p = e.startPTY(t, 24, 80, "exec", "-it", ctrID, "sh", "-c", "echo still-works")
	p.expect(t, regexp.MustCompile(`still-works`), 60*time.Second)
	if err := p.wait(t); err != nil {
		t.Fatalf("TTY exec after killed clients: %v\n%q", err, p.output())
	}
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("after exec: %+v", ci.Status)
	}
}

func TestExecWithoutGuestAgent(t *testing.T) {
	// An exec waits agent_wait_timeout for a booting guest's agent: keep
	// the wait short here, where the agent never comes.
	e := newVMEnvWith(t, daemonOpts{extraEnv: []string{"VMPOD_AGENT_WAIT_TIMEOUT=3s"}})
	// The test guest starts qemu-ga after cloud-init's bootcmd: take it away.
	f, ctrID := e.bootVM("no-agent", map[string]string{
		"vmpod.dev/cloud-init-user-data": "#cloud-config\nbootcmd:\n  - [rm, -f, /usr/sbin/qemu-ga]\n",
	})
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga failed`), 10*time.Second)
	for _, args := range [][]string{
		{"exec", "-s", ctrID, "true"},
		{"exec", ctrID, "true"},
	} {
		start := time.Now()
		_, errOut, err := e.crictl(args...)
		if err == nil || !strings.Contains(errOut, "qemu-guest-agent") || !strings.Contains(errOut, "did not answer within 3s") {
			t.Fatalf("crictl %s without an agent: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		if d := time.Since(start); d < 3*time.Second || d > 20*time.Second {
			t.Fatalf("crictl %s gave up after %v, want about agent_wait_timeout (3s)", strings.Join(args, " "), d)
		}
		t.Logf("crictl %s -> %s", strings.Join(args, " "), strings.TrimSpace(errOut))
	}
	p := e.startPTY(t, 24, 80, "exec", "-it", ctrID, "sh")
	if err := p.wait(t); err == nil || !strings.Contains(p.output(), "qemu-guest-agent") {
		t.Fatalf("crictl exec -it without an agent: %v\n%q", err, p.output())
	}
	// The VM keeps running, its console too.
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("after exec without an agent: %+v", ci.Status)
	}
	a := e.attach(ctrID)
	a.send("echo console-$((40+2))")
	a.expect(regexp.MustCompile(`console-42`), 30*time.Second)
}

// TestExecWaitsForBootingGuest: an exec made right after StartContainer,
// long before the guest's agent runs, waits for it and succeeds (it used
// to fail at once with FailedPrecondition, as critest's exec tests and
// kubectl exec on a fresh pod did).
func TestExecWaitsForBootingGuest(t *testing.T) {
	e := newVMEnv(t)
	f := e.podConfigs("early", 0, nil)
	_, ctrID := e.startVM(f)
	start := time.Now()
	out := e.mustCrictl("exec", "-s", ctrID, "cat", "/etc/hostname")
	if strings.TrimSpace(out) != "early" {
		t.Fatalf("exec on a booting VM: %q", out)
	}
	t.Logf("the exec made right after start waited %v for the guest agent", time.Since(start).Round(time.Millisecond))
	// The streaming exec too, on a second boot of the pod.
	e.mustCrictl("stop", "-t", "0", ctrID)
	f2 := e.podConfigs("early", 1, nil)
	podID := strings.TrimSpace(e.mustCrictl("pods", "-q", "--name", "early"))
	ctr2 := strings.TrimSpace(e.mustCrictl("create", podID, f2.ctr, f2.pod))
	e.mustCrictl("start", ctr2)
	if out := e.mustCrictl("exec", ctr2, "cat", "/etc/hostname"); strings.TrimSpace(out) != "early" {
		t.Fatalf("streaming exec on a booting VM: %q", out)
	}
}

// TestAttachStdinOnce: on a container created with stdin_once, an attach
// whose client's stdin ends returns (it never did: critest's attach test
// hung the suite), the input reached the console, and the VM runs on.
func TestAttachStdinOnce(t *testing.T) {
	e := newVMEnv(t)
	f := e.podConfigs("once", 0, nil)
	e.editCtr(f, func(ctr map[string]any) { ctr["stdin_once"] = true })
	_, ctrID := e.startVM(f)
	waitLog(t, f.logPath, readyRE, bootTimeout)
	cmd := exec.Command("timeout", "-k", "5", "60", "crictl", "--config", e.crictlConfig, "-t", "120s", "attach", "-i", ctrID)
	cmd.Stdin = strings.NewReader("echo once-$((3*14))\n")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("crictl attach -i with piped stdin: %v after %v\n%s", err, time.Since(start), out)
	}
	t.Logf("attach returned %v after its stdin ended", time.Since(start).Round(time.Millisecond))
	waitLog(t, f.logPath, regexp.MustCompile(`once-42`), 30*time.Second)
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("the VM stopped with the attach: %+v", ci.Status)
	}
}

// crictlIn runs crictl with stdin and returns its stdout; it fails the
// test on error.
func (e *vmEnv) crictlIn(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := e.crictlStdin(stdin, args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// crictlStdin runs crictl with stdin.
func (e *vmEnv) crictlStdin(stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := execCommandTimeout(2*time.Minute, "crictl", append([]string{"--config", e.crictlConfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// crictlTimed runs crictl and returns when its first output came (since
// the start) and all of it.
func (e *vmEnv) crictlTimed(t *testing.T, args ...string) (time.Duration, string) {
	t.Helper()
	cmd := execCommandTimeout(2*time.Minute, "crictl", append([]string{"--config", e.crictlConfig}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var all []byte
	var first time.Duration
	buf := make([]byte, 4096)
	for {
		n, err := stdout.Read(buf)
		if n > 0 && first == 0 {
			first = time.Since(start)
		}
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("crictl %s: %v", strings.Join(args, " "), err)
	}
	return first, string(all)
}

// waitGuestProcs waits until a process whose command line contains proc
// runs in the guest (present) or no longer does, and returns how long
// that took. It looks with ExecSync (ps).
func (e *vmEnv) waitGuestProcs(t *testing.T, ctrID, proc string, present bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		out, _, err := e.crictl("exec", "-s", ctrID, "ps", "-o", "pid,args")
		if err == nil && strings.Contains(out, proc) == present {
			return time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out, _, _ := e.crictl("exec", "-s", ctrID, "ps", "-o", "pid,args")
	t.Fatalf("guest process %q present=%v not reached in %v:\n%s", proc, !present, timeout, out)
	return 0
}

// ptySession is crictl running on a pseudo-terminal, as from a user's
// terminal (crictl exec -it insists on one).
type ptySession struct {
	cmd    *exec.Cmd
	master *os.File
	mu     sync.Mutex
	out    []byte
	done   chan struct{}
}

func (e *vmEnv) startPTY(t *testing.T, rows, cols uint16, args ...string) *ptySession {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	p := &ptySession{master: master, done: make(chan struct{})}
	p.cmd = exec.Command("crictl", append([]string{"--config", e.crictlConfig}, args...)...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out = append(p.out, buf[:n]...)
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		master.Close()
	})
	return p
}

func (p *ptySession) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

func (p *ptySession) send(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func (p *ptySession) expect(t *testing.T, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if re.MatchString(p.output()) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q on the terminal within %v; got %q", re, timeout, p.output())
}

// resize changes the terminal's size; the kernel signals SIGWINCH to crictl.
func (p *ptySession) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(p.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

// wait waits for crictl to exit (and its output to drain).
func (p *ptySession) wait(t *testing.T) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		select {
		case <-p.done:
		case <-time.After(2 * time.Second):
		}
		return err
	case <-time.After(2 * time.Minute):
		t.Fatalf("crictl did not exit; terminal: %q", p.output())
		return nil
	}
}
