package e2e

import (
	"bufio"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// commandPod writes the configs of a pod whose container runs argv (as
// command and args, like a Job's) in the test guest.
func (e *vmEnv) commandPod(name string, argv ...string) podFiles {
	f := e.podConfigs(name, 0, nil)
	e.editCtr(f, func(ctr map[string]any) {
		ctr["command"], ctr["args"] = argv[:1], argv[1:]
		ctr["envs"] = []map[string]string{{"key": "GREETING", "value": "hello from the pod spec"}}
		ctr["working_dir"] = "/tmp"
		delete(ctr, "stdin")
		delete(ctr, "tty")
	})
	return f
}

// logRecord is one line of a CRI log, partial records joined.
type logRecord struct{ stream, text string }

func logRecords(t *testing.T, path string) []logRecord {
	t.Helper()
	var out []logRecord
	for _, l := range strings.Split(joinPartialRecords(readFile(t, path)), "\n") {
		if f := strings.SplitN(l, " ", 4); len(f) == 4 {
			out = append(out, logRecord{f[1], f[3]})
		}
	}
	return out
}

// commandLines are the records of the command's output: not the
// console's, which start with "[console] ".
func commandLines(recs []logRecord) []logRecord {
	return slices.DeleteFunc(slices.Clone(recs), func(r logRecord) bool { return strings.HasPrefix(r.text, "[console] ") })
}

// TestCommandExitCodeAndStreams: a container's command runs in the test
// guest once its agent answers, with the container's env and working
// dir; its stdout and stderr reach the CRI log as the stdout and stderr
// streams (crictl logs splits them again), beside the console's lines,
// which carry the "[console] " prefix; the container ends EXITED with the
// command's code and the VM is powered off.
func TestCommandExitCodeAndStreams(t *testing.T) {
	e := newVMEnv(t)
	f := e.commandPod("exit7", "sh", "-c", `echo out; echo err >&2; echo "$GREETING in $(pwd)"; exit 7`)
	_, ctrID := e.startVM(f)
	start := time.Now()
	ci := e.waitState(ctrID, "CONTAINER_EXITED", 3*time.Minute)
	t.Logf("EXITED %.1fs after StartContainer", time.Since(start).Seconds())
	if ci.Status.ExitCode != 7 || ci.Status.Reason != "Error" || ci.Status.Message != "the command exited with code 7" {
		t.Fatalf("status %+v", ci.Status)
	}
	recs := logRecords(t, f.logPath)
	want := []logRecord{{"stdout", "out"}, {"stderr", "err"}, {"stdout", "hello from the pod spec in /tmp"}}
	got := commandLines(recs)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Fatalf("log lacks %+v; command lines %+v\n%s", w, got, tail(readFile(t, f.logPath), 30))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("command lines %+v, want only %+v", got, want)
	}
	// The console is logged too, told apart by its prefix: the guest's
	// ready line and its shutdown after the command ended.
	for _, line := range []string{"[console] vmpod-test-guest ready", "[console] vmpod-test-guest shutting down"} {
		if !slices.ContainsFunc(recs, func(r logRecord) bool {
			return r.stream == "stdout" && strings.HasSuffix(r.text, line[len("[console] "):]) && strings.HasPrefix(r.text, "[console] ")
		}) {
			t.Fatalf("log lacks the console line %q:\n%s", line, tail(readFile(t, f.logPath), 40))
		}
	}
	// crictl logs hands the streams back apart.
	cmd := exec.Command("crictl", "--config", e.crictlConfig, "logs", ctrID)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "\nout\n") || strings.Contains(stdout.String(), "\nerr\n") || !strings.Contains(stderr.String(), "err\n") {
		t.Fatalf("crictl logs: stdout %q, stderr %q", tail(stdout.String(), 8), stderr.String())
	}
	// The VM is gone: the guest powered off (ACPI), not destroyed.
	if !strings.Contains(e.Log(), "command ended; shutting the VM down") || strings.Contains(e.LogTail(30), "VM destroyed") {
		t.Fatalf("the VM was not shut down as expected:\n%s", e.LogTail(30))
	}
}

// TestCommandLiveLog: a long-running command's output is in the log, and
// in crictl logs -f, while the command still runs; it ends 0, Completed.
func TestCommandLiveLog(t *testing.T) {
	e := newVMEnv(t)
	f := e.commandPod("live", "sh", "-c", `echo first; sleep 20; echo last`)
	_, ctrID := e.startVM(f)
	follow := exec.Command("crictl", "--config", e.crictlConfig, "logs", "-f", ctrID)
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(3 * time.Minute)
	for first := false; !first; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("crictl logs -f ended before the command's first line")
			}
			first = l == "first"
		case <-deadline:
			t.Fatalf("no line \"first\" from crictl logs -f:\n%s", tail(readFile(t, f.logPath), 30))
		}
	}
	sawFirst := time.Now()
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("the command's first line came when the container was %s", ci.Status.State)
	}
	if strings.Contains(readFile(t, f.logPath), "stdout F last") {
		t.Fatal("the last line is in the log already")
	}
	for last := false; !last; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("crictl logs -f ended before the last line:\n%s", tail(readFile(t, f.logPath), 30))
			}
			last = l == "last"
		case <-deadline:
			t.Fatal("no line \"last\"")
		}
	}
	if d := time.Since(sawFirst); d < 15*time.Second {
		t.Fatalf("the last line came %v after the first; the command sleeps 20 s between them", d)
	}
	if ci := e.waitState(ctrID, "CONTAINER_EXITED", time.Minute); ci.Status.ExitCode != 0 || ci.Status.Reason != "Completed" {
		t.Fatalf("status %+v", ci.Status)
	}
}

// TestCommandStop: StopContainer sends SIGTERM to the command first; its
// exit code (here its trap's) is the container's.
func TestCommandStop(t *testing.T) {
	e := newVMEnv(t)
	f := e.commandPod("stop", "sh", "-c", `trap 'echo got TERM; exit 3' TERM; echo waiting; while :; do sleep 1; done`)
	_, ctrID := e.startVM(f)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F waiting`), 3*time.Minute)
	start := time.Now()
	e.mustCrictl("stop", "-t", "30", ctrID)
	took := time.Since(start)
	ci := e.inspect(ctrID)
	t.Logf("stop took %.1fs", took.Seconds())
	if ci.Status.State != "CONTAINER_EXITED" || ci.Status.ExitCode != 3 || ci.Status.Reason != "Error" || took > 20*time.Second {
		t.Fatalf("after a stop of %v: %+v", took, ci.Status)
	}
	if !slices.Contains(commandLines(logRecords(t, f.logPath)), logRecord{"stdout", "got TERM"}) {
		t.Fatalf("the command did not get SIGTERM:\n%s", tail(readFile(t, f.logPath), 20))
	}
}

// TestCommandSurvivesRestart: vmpod killed with SIGKILL while the command
// runs and prints; after a restart the log goes on where it was (the
// guest's writes wait while nobody reads the port) and the container ends
// with the command's code.
func TestCommandSurvivesRestart(t *testing.T) {
	e := newVMEnv(t)
	f := e.commandPod("restart", "sh", "-c", `i=0; while [ $i -lt 25 ]; do i=$((i+1)); echo "tick $i"; sleep 1; done; exit 4`)
	_, ctrID := e.startVM(f)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F tick 3\n`), 3*time.Minute)
	e.Kill()
	time.Sleep(5 * time.Second)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	ci := e.waitState(ctrID, "CONTAINER_EXITED", 2*time.Minute)
	if ci.Status.ExitCode != 4 || ci.Status.Reason != "Error" {
		t.Fatalf("status after the restart %+v", ci.Status)
	}
	var ticks []string
	for _, r := range commandLines(logRecords(t, f.logPath)) {
		ticks = append(ticks, r.text)
	}
	var want []string
	for i := 1; i <= 25; i++ {
		want = append(want, "tick "+strconv.Itoa(i))
	}
	if !slices.Equal(ticks, want) {
		t.Fatalf("the command's lines across the restart: %q", ticks)
	}
}

// TestCommandWithStdin: a container with stdin whose command is a shell
// (critest's exec containers) keeps running, its shell waiting on a stdin
// that stays open, so exec works in it; attach is still the serial
// console; a stop ends the shell with SIGTERM (143).
func TestCommandWithStdin(t *testing.T) {
	e := newVMEnv(t)
	f := e.commandPod("stdin", "/bin/sh")
	e.editCtr(f, func(ctr map[string]any) { ctr["stdin"] = true })
	_, ctrID := e.startVM(f)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F \[console\] vmpod-test-guest ready`), 3*time.Minute)
	if out := e.mustCrictl("exec", "-s", ctrID, "sh", "-c", "while [ ! -s /run/vmpod/command.main ]; do sleep 0.2; done; cat /proc/$(cat /run/vmpod/command.main)/comm"); strings.TrimSpace(out) != "sh" {
		t.Fatalf("the command's process is %q", out)
	}
	time.Sleep(2 * time.Second)
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("a shell with stdin ended: %+v", ci.Status)
	}
	a := e.attach(ctrID)
	a.send("echo attached-$((6*7))")
	a.expect(regexp.MustCompile(`attached-42`), time.Minute)
	a.close()
	e.mustCrictl("stop", "-t", "30", ctrID)
	if ci := e.inspect(ctrID); ci.Status.ExitCode != 143 || ci.Status.Reason != "Error" {
		t.Fatalf("after the stop: %+v", ci.Status)
	}
}
