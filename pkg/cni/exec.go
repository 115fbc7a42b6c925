package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultTimeout is the deadline of one CNI operation (the ADD or DEL of
// the whole network config list) when Config.Timeout is 0.
const DefaultTimeout = time.Minute

// pluginWaitDelay is how long a killed plugin's output pipes may stay open
// (a grandchild that left the process group holds them) before vmpod stops
// waiting for them.
const pluginWaitDelay = 2 * time.Second

// maxPluginOutput caps what vmpod keeps of a plugin's stdout and stderr.
const maxPluginOutput = 1 << 20

// pluginExec runs CNI plugins as libcni's own RawExec does (stdin, env,
// the "text file busy" retry, the error decoding), with one difference
// that makes a deadline real: a plugin whose context ends is killed with
// its whole process group, and vmpod waits at most pluginWaitDelay more for
// its pipes. RawExec kills only the plugin, and its Wait then blocks for as
// long as any child of the plugin (a `sleep` in a shell plugin, a helper it
// forked) keeps stdout open, which can be for ever.
type pluginExec struct {
	version.PluginDecoder
	log *slog.Logger
}

// FindInPath finds a plugin binary as libcni does.
func (e *pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// ExecPlugin runs one plugin invocation. When ctx ends first, the error
// wraps context.Cause(ctx) (the Manager's cause names cni_timeout and wraps
// errdefs.ErrUnavailable).
func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		out, err := e.run(ctx, pluginPath, stdin, environ)
		// The plugin binary is being replaced right now: RawExec's retry.
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "text file busy") {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, e.stopped(ctx, pluginPath, environ)
		case <-time.After(time.Second):
		}
	}
}

func (e *pluginExec) run(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	stdout, stderr := &cappedBuffer{max: maxPluginOutput}, &cappedBuffer{max: maxPluginOutput}
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The plugin leads its group: kill it and everything it started.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = pluginWaitDelay
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil {
		// The plugin exited 0, but something it started still held its
		// output pipes pluginWaitDelay later: its answer is complete.
		e.log.Warn("CNI plugin left a process holding its output", "plugin", filepath.Base(pluginPath), "command", cniCommand(environ))
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, e.stopped(ctx, pluginPath, environ)
		}
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	if stderr.Len() > 0 {
		e.log.Debug("CNI plugin wrote to stderr", "plugin", filepath.Base(pluginPath), "stderr", truncate(stderr.String(), 4096))
	}
	return stdout.Bytes(), nil
}

// stopped is the error of a plugin whose context ended.
func (e *pluginExec) stopped(ctx context.Context, pluginPath string, environ []string) error {
	return fmt.Errorf("CNI plugin %s (%s) was killed: %w", pluginPath, cniCommand(environ), context.Cause(ctx))
}

// pluginError decodes a failed plugin's CNI error from its stdout, as
// RawExec does.
func pluginError(err error, stdout, stderr []byte) error {
	msg := types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		msg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		msg.Msg = fmt.Sprintf("netplugin failed: %q: %v", truncate(string(stderr), 4096), err)
	default:
		if perr := json.Unmarshal(stdout, &msg); perr != nil {
			msg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", truncate(string(stdout), 4096), perr)
		}
	}
	return &msg
}

// cniCommand returns CNI_COMMAND from a plugin's environment.
func cniCommand(environ []string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			return v
		}
	}
	return "?"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// cappedBuffer keeps the first max bytes written and drops the rest (a
// plugin that floods its output cannot grow vmpod without bound).
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// withDeadline bounds one CNI operation by the Manager's timeout; the
// context's cause, which the plugin's error wraps, names cni_timeout and
// is of class errdefs.ErrUnavailable.
func (m *Manager) withDeadline(ctx context.Context, op string) (context.Context, context.CancelFunc) {
	cause := fmt.Errorf("CNI %s did not finish within cni_timeout (%s); a CNI plugin may be hung: %w",
		op, m.timeout, errdefs.ErrUnavailable)
	return context.WithTimeoutCause(ctx, m.timeout, cause)
}

// add runs CNI ADD of list for att within the deadline.
func (m *Manager) add(ctx context.Context, list *libcni.NetworkConfigList, att *Attachment) (types.Result, error) {
	ctx, cancel := m.withDeadline(ctx, "ADD")
	defer cancel()
	res, err := m.cni.AddNetworkList(ctx, list, att.runtimeConf(att.NetNS))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD of network %q (%s): %w", list.Name, att.ConfFile, err)
	}
	return res, nil
}

// del runs CNI DEL of list for att, in the netns ns ("" for none), within
// the deadline.
func (m *Manager) del(ctx context.Context, list *libcni.NetworkConfigList, att *Attachment, ns string) error {
	ctx, cancel := m.withDeadline(ctx, "DEL")
	defer cancel()
	if err := m.cni.DelNetworkList(ctx, list, att.runtimeConf(ns)); err != nil {
		return fmt.Errorf("CNI DEL of network %q (%s): %w", list.Name, att.ConfFile, err)
	}
	return nil
}
