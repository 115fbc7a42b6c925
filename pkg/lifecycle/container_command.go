package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/vm"
)

// A container with a command or args runs them as its main process in
// the guest (pkg/guest's wrapper), and the VM lives as long as they do.
// Each running such container has a runner goroutine:
//
//	wait for the guest agent (command_start_timeout from the VM's start)
//	  └─> start the command (op lock: Starting stored, guest-exec, PID stored)
//	        └─> poll guest-exec-status (every second at most; at once when
//	            the output streams' end lines came)
//	              └─> exit: wait for the output to end, then (op lock) store
//	                  the exit in CommandState, ask the VM to power off,
//	                  destroy it after command_poweroff_timeout, and record
//	                  the container EXITED with the command's code.
//
// StopContainer sends SIGTERM to the command first and waits for its exit
// within the grace period, then shuts the VM down (container_stop.go).
// Every step is stored before the next, so a vmpod that restarts picks up
// where the last one was (recovery starts the runner again).

// Exit codes and reasons of a command that did not run to its end.
const (
	// ExitStartError and ReasonStartError: the command never ran (as
	// containerd reports a container whose task did not start).
	ExitStartError   = 128
	ReasonStartError = "StartError"
	// ExitUnknown: the command ended but its code is lost.
	ExitUnknown = 255
)

const (
	// commandPoll is the longest interval between two looks at a
	// running command.
	commandPoll = time.Second
	// outputEndWait is how long an ended command's output may take to
	// arrive after its exit was seen.
	outputEndWait = 3 * time.Second
	// endRetry is how often a runner retries shutting down a VM whose
	// command ended, while libvirt refuses.
	endRetry = 5 * time.Second
)

// errNotRunning stops a runner: the container left RUNNING or is being
// stopped.
var errNotRunning = errors.New("the container is no longer running")

// commandRun is the runner of a running container's command.
type commandRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the runner returned
	exited chan struct{} // closed once result holds the command's exit
	result commandResult
}

// commandResult is how a command ended.
type commandResult struct {
	code            int32
	reason, message string
	at              int64 // unix nanoseconds
}

// guestCommand is the container's command as the guest runs it; nil when
// it has neither command nor args.
func guestCommand(cfg *runtimeapi.ContainerConfig, nonce string) *guest.Command {
	argv := append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...)
	if len(argv) == 0 {
		return nil
	}
	var env [][2]string
	for _, kv := range cfg.GetEnvs() {
		env = append(env, [2]string{kv.GetKey(), string(kv.GetValue())})
	}
	return &guest.Command{
		Argv: argv, Env: guest.CommandEnv(env), Dir: cfg.GetWorkingDir(),
		Stdout: vm.StdoutDevice, Stderr: vm.StderrDevice, Nonce: nonce, Stdin: cfg.GetStdin(),
	}
}

// startCommandRunner starts the runner of a running container's command.
func (c *Controller) startCommandRunner(ct *container) {
	rec := ct.Get()
	if rec.Command == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &commandRun{cancel: cancel, done: make(chan struct{}), exited: make(chan struct{})}
	if old := ct.swapRun(run); old != nil {
		old.cancel()
	}
	log := c.log.With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	go func() {
		defer close(run.done)
		c.runCommand(logging.With(ctx, log), ct, run)
	}()
}

// stopCommandRunner ends the runner (the VM stopped, or the container is
// being removed).
func (ct *container) stopCommandRunner() {
	if run := ct.swapRun(nil); run != nil {
		run.cancel()
	}
}

// runCommand runs the command to its end, then ends the VM.
func (c *Controller) runCommand(ctx context.Context, ct *container, run *commandRun) {
	if cs := ct.Get().Command; cs.Exited {
		run.result = commandResult{code: cs.ExitCode, reason: cs.Reason, message: cs.Message, at: cs.FinishedAt}
	} else {
		res, ok := c.commandOutcome(ctx, ct)
		if !ok {
			return
		}
		run.result = res
	}
	close(run.exited)
	for !c.endCommandVM(ctx, ct, run.result) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(endRetry):
		}
	}
}

// commandOutcome starts the command unless it started already, and waits
// for its end; false when the runner was cancelled first.
func (c *Controller) commandOutcome(ctx context.Context, ct *container) (commandResult, bool) {
	rec := ct.Get()
	a := guest.NewAgent(c.libvirt, rec.Domain)
	pid := rec.Command.PID
	if pid == 0 {
		var failed *commandResult
		pid, failed = c.startCommand(ctx, ct, a)
		if failed != nil {
			return *failed, true
		}
		if pid == 0 {
			return commandResult{}, false
		}
	}
	return c.waitCommand(ctx, ct, a, pid)
}

// startFailed is the result of a command that never ran.
func (c *Controller) startFailed(msg string) *commandResult {
	return &commandResult{code: ExitStartError, reason: ReasonStartError, message: msg, at: c.now().UnixNano()}
}

// startCommand waits for the guest agent and starts the command; it
// returns its pid, or how it failed, or neither when the runner was
// cancelled or the container stopped.
func (c *Controller) startCommand(ctx context.Context, ct *container, a *guest.Agent) (int, *commandResult) {
	log := logging.From(ctx)
	// From the VM's start, which may be before a restart of vmpod.
	timeout := c.cfg.CommandStartTimeout.Std()
	deadline := time.Now().Add(timeout - c.now().Sub(time.Unix(0, ct.Get().StartedAt)))
	for {
		if err := waitAgentUntil(ctx, a, deadline); err != nil {
			if ctx.Err() != nil {
				return 0, nil
			}
			return 0, c.startFailed(fmt.Sprintf("the guest agent did not answer within %s of the VM's start, so the command never ran; the image needs qemu-guest-agent running on the org.qemu.guest_agent.0 channel (last error: %v)", timeout, err))
		}
		pid, err := c.launchCommand(ctx, ct, a)
		switch {
		case err == nil:
			return pid, nil
		case errors.Is(err, errNotRunning) || ctx.Err() != nil:
			return 0, nil
		case (errdefs.IsFailedPrecondition(err) || errdefs.IsUnavailable(err)) && time.Now().Before(deadline):
			// The agent or libvirt went away between the ping and the
			// start; starting again is safe (the wrapper runs once).
			log.Info("starting the command failed; retrying", logging.KeyErr, err)
			select {
			case <-ctx.Done():
				return 0, nil
			case <-time.After(agentPoll):
			}
		default:
			return 0, c.startFailed(fmt.Sprintf("the command could not be started in the guest: %v", err))
		}
	}
}

// waitAgentUntil pings the agent until it answers or deadline passes.
func waitAgentUntil(ctx context.Context, a *guest.Agent, deadline time.Time) error {
	for {
		err := a.Ping(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(agentPoll, left)):
		}
	}
}

// launchCommand starts the command under the container's operation lock,
// so that a StopContainer either comes first (and it never starts) or
// finds its pid. After a restart mid-start it asks the guest whether the
// command runs already.
func (c *Controller) launchCommand(ctx context.Context, ct *container, a *guest.Agent) (int, error) {
	ct.op.Lock()
	defer ct.op.Unlock()
	rec := ct.Get()
	if rec.State != ContainerRunning || rec.StopRequested {
		return 0, errNotRunning
	}
	log := logging.From(ctx)
	if rec.Command.Starting {
		tr, err := a.TraceCommand(ctx, "", 0)
		if err != nil {
			return 0, fmt.Errorf("ask the guest whether the command runs: %w", err)
		}
		if tr.PID > 0 {
			log.Info("the command was started before vmpod restarted; following it", "pid", tr.PID)
			c.storeCommandPID(ctx, ct, tr.PID)
			return tr.PID, nil
		}
	} else {
		if _, err := ct.Update(func(r *ContainerRecord) error {
			r.updateCommand(func(cs *CommandState) { cs.Starting = true })
			return nil
		}); err != nil {
			return 0, fmt.Errorf("store container record: %w", err)
		}
		failpoint.Hit("command/starting")
	}
	pid, err := a.StartCommand(ctx, *guestCommand(ct.config, rec.Command.Nonce))
	if err != nil {
		return 0, err
	}
	c.storeCommandPID(ctx, ct, pid)
	failpoint.Hit("command/started")
	log.Info("command started", "pid", pid)
	return pid, nil
}

// storeCommandPID stores the command's pid; a failed write is logged (the
// runner follows the pid anyway; after a restart the guest says it).
func (c *Controller) storeCommandPID(ctx context.Context, ct *container, pid int) {
	if _, err := ct.Update(func(r *ContainerRecord) error {
		r.updateCommand(func(cs *CommandState) { cs.PID = pid })
		return nil
	}); err != nil {
		logging.From(ctx).Error("store the command's pid", "pid", pid, logging.KeyErr, err)
	}
}

// outputEnded is the channel closed when the command's output ended; nil
// when the container has no console reader.
func outputEnded(ct *container) <-chan struct{} {
	if con := ct.getConsole(); con != nil {
		return con.OutputEnded()
	}
	return nil
}

// waitCommand follows the command (the wrapper's pid) until it exits;
// false when the runner was cancelled first.
func (c *Controller) waitCommand(ctx context.Context, ct *container, a *guest.Agent, pid int) (commandResult, bool) {
	log := logging.From(ctx)
	poll := guest.FirstPoll
	ended := outputEnded(ct)
	for {
		ex, err := a.CommandStatus(ctx, pid)
		if ctx.Err() != nil {
			return commandResult{}, false
		}
		switch {
		case err == nil && ex.RunningPID != 0:
			log.Warn("the command was already started in this boot; following that run", "pid", ex.RunningPID)
			pid = ex.RunningPID
			c.storeCommandPID(ctx, ct, pid)
			continue
		case err == nil && ex.Exited:
			failpoint.Hit("command/exit-seen")
			if ex.StartError != "" {
				return *c.startFailed("the guest could not start the command: " + ex.StartError), true
			}
			return c.commandEnded(ctx, ct, ex.Code), true
		case err == nil:
		case errdefs.IsFailedPrecondition(err) || errdefs.IsUnavailable(err):
			// The agent or libvirt is away for now; a VM that stopped
			// is the monitor's to notice, and cancels this runner.
		default:
			// qemu-ga does not know the process: it restarted, or it
			// reported the exit to a vmpod that died before storing it.
			// The guest's files say.
			tr, terr := a.TraceCommand(ctx, "", pid)
			switch {
			case terr != nil:
				log.Debug("the command's status is unknown for now", logging.KeyErr, err, "trace_err", terr)
			case tr.ExitCode != nil:
				return c.commandEnded(ctx, ct, *tr.ExitCode), true
			case !tr.Alive:
				return commandResult{code: ExitUnknown, reason: vm.ReasonError, at: c.now().UnixNano(),
					message: "the command ended, but its exit code is lost: the guest agent no longer knew its process and the guest kept no exit code"}, true
			}
		}
		select {
		case <-ctx.Done():
			return commandResult{}, false
		case <-ended:
			// The end lines came: the exit is due.
			ended, poll = nil, guest.FirstPoll
			continue
		case <-time.After(poll):
		}
		poll = min(2*poll, commandPoll)
	}
}

// commandEnded is the result of a command that exited with code, once its
// output is in the log (or outputEndWait passed).
func (c *Controller) commandEnded(ctx context.Context, ct *container, code int) commandResult {
	r := commandResult{code: int32(code), reason: vm.ReasonCompleted, at: c.now().UnixNano(),
		message: fmt.Sprintf("the command exited with code %d", code)}
	if code != 0 {
		r.reason = vm.ReasonError
	}
	if ch := outputEnded(ct); ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		case <-time.After(outputEndWait):
			logging.From(ctx).Warn("the command exited but its output did not end; the log may miss its last lines", "wait", outputEndWait)
		}
	}
	return r
}

// recordCommandExit stores how the command ended, once.
func (c *Controller) recordCommandExit(ct *container, r commandResult) error {
	if ct.Get().Command.Exited {
		return nil
	}
	if _, err := ct.Update(func(rec *ContainerRecord) error {
		rec.updateCommand(func(cs *CommandState) {
			cs.Exited, cs.ExitCode, cs.Reason, cs.Message, cs.FinishedAt = true, r.code, r.reason, r.message, r.at
		})
		return nil
	}); err != nil {
		return fmt.Errorf("store the command's exit: %w", err)
	}
	failpoint.Hit("command/exited")
	return nil
}

// endCommandVM stores the command's exit and shuts its VM down: ACPI,
// then destroy after command_poweroff_timeout. It reports whether the
// container is no longer running.
func (c *Controller) endCommandVM(ctx context.Context, ct *container, r commandResult) bool {
	ct.op.Lock()
	defer ct.op.Unlock()
	rec := ct.Get()
	if rec.State != ContainerRunning {
		return true
	}
	log := logging.From(ctx)
	if err := c.recordCommandExit(ct, r); err != nil {
		log.Error("the command ended; recording its exit failed, retrying", logging.KeyErr, err)
		return false
	}
	log.Info("command ended; shutting the VM down", "exit_code", r.code, "reason", r.reason)
	timeout := c.cfg.CommandPoweroffTimeout.Std()
	if timeout <= 0 || !c.powerOff(ctx, rec.Domain, timeout, log) {
		if err := c.libvirt.Destroy(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			log.Error("the command ended; destroying its VM failed, retrying", logging.KeyErr, err)
			return false
		}
	}
	c.refreshOpLocked(ctx, ct)
	return ct.Get().State != ContainerRunning
}

// commandExitStatus is the exit of a container with a command whose VM
// stopped: the command's when it is known; else 137 after a stop (the
// command was killed with its VM), else how the VM stopped.
func commandExitStatus(r *ContainerRecord) {
	cs := r.Command
	switch {
	case cs.Exited:
		r.ExitCode, r.Reason, r.Message = cs.ExitCode, cs.Reason, cs.Message
		if cs.FinishedAt != 0 {
			r.FinishedAt = cs.FinishedAt
		}
	case r.StopRequested:
		r.ExitCode, r.Reason = vm.ExitKilled, vm.ReasonKilled
		r.Message = "the command did not exit within the stop's grace period and was killed with its VM"
	default:
		r.Message = "the VM stopped before its command ended: " + r.Message
	}
}
