package lifecycle_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/guest/guesttest"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
	"github.com/vmpod/vmpod/pkg/store"
	"github.com/vmpod/vmpod/pkg/vm"
)

// cmdCtr is a container whose command and args are the guest's workload.
func cmdCtr(name string) *runtimeapi.ContainerConfig {
	c := ctr(name)
	c.Command = []string{"sh", "-c"}
	c.Args = []string{"echo out; exit 7"}
	c.Envs = []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("it's $HOME")}}
	c.WorkingDir = "/srv"
	return c
}

// startCmd runs a sandbox with a started command container; g is its agent.
func startCmd(t *testing.T, e *lifecycletest.Env, name string, g *guesttest.Guest) string {
	t.Helper()
	if g != nil {
		e.LV.SetAgent(g.Answer)
	}
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod(name), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, cmdCtr("job"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// waitCommandStarted waits until the controller's record has the
// command's guest pid. It polls what ContainerInfo reads, not the store:
// guarded.Update stores before it swaps the in-memory record, so a stored
// pid may not be the controller's yet, while an in-memory one is stored.
func waitCommandStarted(t *testing.T, e *lifecycletest.Env, id string) {
	t.Helper()
	eventually(t, "the command started", func() bool {
		info, err := e.Pods.ContainerInfo(lifecycletest.Ctx(t), id)
		cmd, _ := info["command"].(map[string]any)
		return err == nil && cmd != nil && cmd["guestPID"] != 0
	})
}

func waitExited(t *testing.T, e *lifecycletest.Env, id string) lifecycle.ContainerRecord {
	t.Helper()
	eventually(t, "container "+id+" exited", func() bool {
		v, err := e.Pods.Container(lifecycletest.Ctx(t), id)
		return err == nil && v.State == lifecycle.ContainerExited
	})
	return e.Record(t, id)
}

// TestCommandIsTheWorkload: the command starts once the agent answers,
// with its argv, env and working dir, its output ports connected before
// the guest ran; when it exits, the VM is powered off (ACPI) and the
// container is EXITED with the command's code.
func TestCommandIsTheWorkload(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	g := guesttest.New()
	id := startCmd(t, e, "job", g)
	waitCommandStarted(t, e, id)
	rec := e.Record(t, id)
	if rec.State != lifecycle.ContainerRunning || rec.Command.PID != g.CommandPID() || !rec.Command.Starting || rec.Command.Nonce == "" {
		t.Fatalf("record while the command runs: %s %+v (guest pid %d)", rec.State, rec.Command, g.CommandPID())
	}
	argv, env := g.Command()
	if n := len(argv); n < 3 || argv[0] != "/bin/sh" || !slices.Equal(argv[n-3:], []string{"sh", "-c", "echo out; exit 7"}) ||
		!slices.Contains(argv, "/srv") || !slices.Contains(argv, "null") || !slices.Contains(argv, vm.StdoutDevice) || !slices.Contains(argv, rec.Command.Nonce) {
		t.Fatalf("wrapper argv %q", argv)
	}
	if want := []string{"PATH=" + guest.DefaultPath, "HOME=/root", "GREETING=it's $HOME"}; !slices.Equal(env, want) {
		t.Fatalf("env %q, want %q", env, want)
	}
	if info, err := e.Pods.ContainerInfo(lifecycletest.Ctx(t), id); err != nil || info["command"].(map[string]any)["guestPID"] != rec.Command.PID {
		t.Fatalf("verbose info %v, %v", info["command"], err)
	}
	con := e.Consoles.Last(t)
	if con.Spec.Stdout != rec.Layout().StdoutSocket() || con.Spec.Stderr != rec.Layout().StderrSocket() || con.Spec.Nonce != rec.Command.Nonce {
		t.Fatalf("console spec %+v", con.Spec)
	}
	x := e.DomainXML(t, rec.Domain)
	var ports []string
	for _, ch := range x.Devices.Channels {
		ports = append(ports, ch.Target.VirtIO.Name)
	}
	if !slices.Contains(ports, "vmpod.stdout") || !slices.Contains(ports, "vmpod.stderr") {
		t.Fatalf("domain ports %q", ports)
	}

	n := len(e.LV.Calls())
	g.EndCommand(7)
	con.EndOutput()
	rec = waitExited(t, e, id)
	if rec.ExitCode != 7 || rec.Reason != "Error" || rec.Message != "the command exited with code 7" || !rec.Command.Exited {
		t.Fatalf("exited as %d %s %q", rec.ExitCode, rec.Reason, rec.Message)
	}
	if calls := e.CallsSince(n); !slices.Contains(calls, "Shutdown "+rec.Domain) || slices.Contains(calls, "Destroy "+rec.Domain) {
		t.Fatalf("the VM was not powered off by ACPI: %q", calls)
	}
	if !con.IsClosed() || g.CommandStarts() != 1 {
		t.Fatalf("console closed %v, command started %d times", con.IsClosed(), g.CommandStarts())
	}
}

// TestCommandWithoutCommand: a container without command or args is the
// VM alone, as before: no output ports, no runner.
func TestCommandWithoutCommand(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	id := runningVM(t, e, "vm")
	rec := e.Record(t, id)
	for _, ch := range e.DomainXML(t, rec.Domain).Devices.Channels {
		if n := ch.Target.VirtIO.Name; strings.HasPrefix(n, "vmpod.std") {
			t.Fatalf("a VM without a command has port %s", n)
		}
	}
	if con := e.Consoles.Last(t); con.Spec.Stdout != "" || rec.Command != nil {
		t.Fatalf("console spec %+v, command %+v", con.Spec, rec.Command)
	}
	time.Sleep(100 * time.Millisecond)
	if g.CommandStarts() != 0 || len(g.Run("/bin/sh")) != 0 {
		t.Fatal("something ran in a guest without a command")
	}
}

// TestCommandStop: StopContainer sends SIGTERM to the command and the VM
// is shut down once it exited (143); a command that ignores it is killed
// with its VM at the end of the grace period (137).
func TestCommandStop(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	g := guesttest.New()
	id := startCmd(t, e, "term", g)
	waitCommandStarted(t, e, id)
	e.Consoles.Last(t).EndOutput()
	start := time.Now()
	if err := e.Pods.StopContainer(lifecycletest.Ctx(t), id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	rec := e.Record(t, id)
	if rec.State != lifecycle.ContainerExited || rec.ExitCode != 143 || rec.Reason != "Error" || len(g.Run("/bin/sh")) < 2 {
		t.Fatalf("after the stop: %s %d %s %q", rec.State, rec.ExitCode, rec.Reason, rec.Message)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the stop took %v although the command exited at once", d)
	}

	e2 := lifecycletest.NewEnv(t)
	g2 := guesttest.New()
	g2.IgnoreTERM()
	id = startCmd(t, e2, "stubborn", g2)
	waitCommandStarted(t, e2, id)
	start = time.Now()
	if err := e2.Pods.StopContainer(lifecycletest.Ctx(t), id, time.Second); err != nil {
		t.Fatal(err)
	}
	rec = e2.Record(t, id)
	if rec.ExitCode != 137 || rec.Reason != "Killed" || !strings.Contains(rec.Message, "grace period") {
		t.Fatalf("a command ignoring SIGTERM: %d %s %q", rec.ExitCode, rec.Reason, rec.Message)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the stop took %v, want about the 1s grace period", d)
	}
}

// TestCommandStartTimeout: a guest whose agent never answers gets the
// command given up after command_start_timeout: 128, StartError, and the
// VM shut down.
func TestCommandStartTimeout(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	e.Cfg.CommandStartTimeout = config.Duration(300 * time.Millisecond)
	e.Pods = e.NewPods()
	id := startCmd(t, e, "noagent", nil)
	rec := waitExited(t, e, id)
	if rec.ExitCode != 128 || rec.Reason != "StartError" || !strings.Contains(rec.Message, "qemu-guest-agent") {
		t.Fatalf("exited as %d %s %q", rec.ExitCode, rec.Reason, rec.Message)
	}
}

// TestCommandAcrossRestart: a vmpod that restarts while the command runs
// follows the same run (it is never started twice) and reports its code;
// one that restarts after qemu-ga reported the exit (it forgets the
// process) reads the code the guest kept; one that restarts after storing
// that it was starting the command asks the guest and follows the run it
// finds.
func TestCommandAcrossRestart(t *testing.T) {
	ctx := lifecycletest.Ctx(t)
	restart := func(e *lifecycletest.Env) {
		t.Helper()
		e.Restart(t)
		if err := e.Pods.Recover(ctx); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("running", func(t *testing.T) {
		e := lifecycletest.NewEnv(t)
		g := guesttest.New()
		id := startCmd(t, e, "r", g)
		waitCommandStarted(t, e, id)
		restart(e)
		g.EndCommand(3)
		e.Consoles.Last(t).EndOutput()
		if rec := waitExited(t, e, id); rec.ExitCode != 3 || g.CommandStarts() != 1 {
			t.Fatalf("exit %d, started %d times", rec.ExitCode, g.CommandStarts())
		}
	})

	t.Run("exit reported, not stored", func(t *testing.T) {
		e := lifecycletest.NewEnv(t)
		g := guesttest.New()
		id := startCmd(t, e, "x", g)
		waitCommandStarted(t, e, id)
		e.Meta.Close() // the dying vmpod stores nothing more
		g.EndCommand(5)
		g.ForgetCommand()
		restart(e)
		e.Consoles.Last(t).EndOutput()
		if rec := waitExited(t, e, id); rec.ExitCode != 5 || rec.Reason != "Error" {
			t.Fatalf("exit %d %s %q", rec.ExitCode, rec.Reason, rec.Message)
		}
	})

	t.Run("starting", func(t *testing.T) {
		e := lifecycletest.NewEnv(t)
		id := startCmd(t, e, "s", nil) // no agent yet: the runner waits
		rec := e.Record(t, id)
		// As if the last vmpod stored Starting and its guest-exec went
		// through, and it died before storing the pid. (Its store is
		// closed first: the abandoned controller stores nothing more, so
		// its runner cannot start the command either.)
		e.Meta.Close()
		e.OpenStore(t)
		rec.Command.Starting = true
		if err := e.Meta.Put(store.Containers, id, rec); err != nil {
			t.Fatal(err)
		}
		g := guesttest.New()
		e.LV.SetAgent(g.Answer)
		pid, err := guest.NewAgent(e.LV, rec.Domain).StartCommand(ctx, guest.Command{Argv: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		restart(e)
		eventually(t, "the runner found the run", func() bool { return e.Record(t, id).Command.PID == pid })
		if g.CommandStarts() != 1 {
			t.Fatalf("the command was started %d times", g.CommandStarts())
		}
	})
}

// TestCommandRefused: what the guest cannot take is refused at create with
// InvalidArgument, and nothing is left.
func TestCommandRefused(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("bad"), "")
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*runtimeapi.ContainerConfig){
		"NUL in an arg":    func(c *runtimeapi.ContainerConfig) { c.Args = []string{"a\x00b"} },
		"relative workdir": func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" },
		"huge env": func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "BIG", Value: []byte(strings.Repeat("x", guest.CommandArgMax))}}
		},
	} {
		c := cmdCtr("bad")
		edit(c)
		if _, err := e.Pods.CreateContainer(ctx, sbID, c); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	e.AssertNoContainers(t)
}

// TestStopPressesAgain: a guest that misses the first ACPI power button
// press (it was still booting: nothing listened for it) gets another
// every 5 s within the grace period, and powers off (0, not destroyed).
func TestStopPressesAgain(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	id := runningVM(t, e, "booting")
	dom := lifecycle.DomainName(id)
	e.LV.SetIgnoreACPI(dom, true)
	time.AfterFunc(time.Second, func() { e.LV.SetIgnoreACPI(dom, false) })
	start := time.Now()
	if err := e.Pods.StopContainer(lifecycletest.Ctx(t), id, 8*time.Second); err != nil {
		t.Fatal(err)
	}
	rec := e.Record(t, id)
	if rec.ExitCode != 0 || rec.Reason != "Completed" {
		t.Fatalf("exited as %d %s %q", rec.ExitCode, rec.Reason, rec.Message)
	}
	if d := time.Since(start); d < 4*time.Second || d > 7*time.Second {
		t.Fatalf("the stop took %v; the second press comes after 5s", d)
	}
}
