package guesttest

import (
	"fmt"
	"strings"
)

// The guest side of a container's command (pkg/guest command.go): the
// wrapper "/bin/sh -c ... vmpod-command ..." runs a fake command until the
// test ends it (EndCommand) or a SIGTERM does (vmpod-signal; 143 unless
// IgnoreTERM); a second wrapper in the same boot finds the first and
// exits 125, as the real one does; vmpod-trace reports the state files.
type commandState struct {
	pid        int  // the wrapper of this boot's run (0: none yet)
	starts     int  // wrappers run
	exit       *int // the exit file
	ignoreTERM bool
}

// isCommand reports whether argv is the command wrapper.
func isCommand(argv []string) bool { return helper(argv) == "vmpod-command" }

// helper is the $0 of a "/bin/sh -c SCRIPT $0 ..." helper.
func helper(argv []string) string {
	if len(argv) > 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
		return argv[3]
	}
	return ""
}

// playCommand plays a new process that is one of the command's (g.mu held).
func (g *Guest) playCommand(pid int, p *proc) {
	exit := func(code int, out, errOut string) { p.exit, p.out, p.errOut = &code, out, errOut }
	c := &g.cmd
	switch helper(p.argv) {
	case "vmpod-command":
		c.starts++
		if c.pid != 0 {
			exit(125, "", fmt.Sprintf("vmpod: the command was already started: %d\n", c.pid))
			return
		}
		c.pid = pid
	case "vmpod-signal":
		run, ok := g.procs[c.pid]
		if !ok || run.exit != nil || c.exit != nil {
			exit(1, "", "no such process\n")
			return
		}
		if !c.ignoreTERM {
			g.endCommand(143)
		}
		exit(0, "", "")
	case "vmpod-trace":
		var b strings.Builder
		if c.pid != 0 {
			fmt.Fprintf(&b, "pid=%d\n", c.pid)
		}
		if c.exit != nil {
			fmt.Fprintf(&b, "exit=%d\n", *c.exit)
		} else if len(p.argv) > 5 && p.argv[5] == fmt.Sprint(c.pid) {
			b.WriteString("alive\n")
		}
		exit(0, b.String(), "")
	}
}

// endCommand ends this boot's command with code (g.mu held).
func (g *Guest) endCommand(code int) {
	c := &g.cmd
	c.exit = &code
	if run, ok := g.procs[c.pid]; ok && run.exit == nil {
		run.exit = &code
	}
}

// EndCommand makes the command exit with code.
func (g *Guest) EndCommand(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endCommand(code)
}

// CommandPID is the pid of this boot's command wrapper (0: not started).
func (g *Guest) CommandPID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cmd.pid
}

// CommandStarts counts the wrappers the guest ran.
func (g *Guest) CommandStarts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cmd.starts
}

// Command is the argv and environment of this boot's command wrapper
// while the agent knows its process (nil: none).
func (g *Guest) Command() (argv, env []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.procs[g.cmd.pid]; ok {
		return p.argv, p.env
	}
	return nil, nil
}

// IgnoreTERM makes the command survive SIGTERM.
func (g *Guest) IgnoreTERM() {
	g.mu.Lock()
	g.cmd.ignoreTERM = true
	g.mu.Unlock()
}

// ForgetCommand makes the agent forget the command's process, as a
// restarted qemu-ga does (or one that reported its exit already).
func (g *Guest) ForgetCommand() {
	g.mu.Lock()
	delete(g.procs, g.cmd.pid)
	g.mu.Unlock()
}
