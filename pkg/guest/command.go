package guest

// The container's command as the guest's workload. A container with a
// command or args runs them as its main process in the guest, started
// with guest-exec once the agent answers. qemu-ga hands out a process's
// output only after it exited, so the command's stdout and stderr go to
// two virtio-serial ports instead (vmpod.stdout, vmpod.stderr), which
// vmpod reads as they are written:
//
//	vmpod                                        guest
//	  guest-exec /bin/sh -c commandWrapper ... ──> wrapper: claims STATE/command.pid
//	  (env: the container's, argv: no shell)       (at most one run per boot), cd DIR,
//	                                               stdin /dev/null, stdout and stderr
//	                                               on the ports; runs the command as
//	                                               its child (pid in STATE/command.main)
//	  <── port vmpod.stdout: output ─────────────── command
//	  <── port vmpod.stderr: output ───────────────
//	  kill -TERM $(cat STATE/command.main) ──────> (StopContainer)
//	                                               command exits with CODE: the wrapper
//	                                               writes CODE to STATE/command.exit,
//	  <── \x1e<nonce>:end:CODE on both ports ────── then the end line on both ports,
//	  guest-exec-status: exited, CODE               and exits with CODE
//
// The end lines tell vmpod that the ports carry nothing more, so the log
// is complete before the container is reported EXITED. The exit file
// keeps the code for a vmpod that restarted after qemu-ga reported the
// exit (it does so once) but before vmpod stored it. The guest needs only
// qemu-ga (guest-exec, guest-exec-status), a POSIX sh with echo, cat, kill
// and mkdir (and mkfifo for a container with stdin), a writable /run, and
// the /dev/virtio-ports/NAME links (udev makes them).

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// CommandStateDir is the guest directory of the command's pid and exit
// files; /run is a tmpfs, emptied by every boot.
const CommandStateDir = "/run/vmpod"

// CommandArgMax bounds the command's argv, environment and working
// directory together: they travel to the agent in one guest-exec, and
// qemu-ga 7.2 stopped answering at all after one of 188 KiB.
const CommandArgMax = 64 << 10

// startErrorMax bounds the wrapper's own error text vmpod keeps.
const startErrorMax = 1024

// DefaultPath is the command's PATH when the container's env has none
// (containerd's default).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// alreadyStarted starts the wrapper's error when the command ran already
// in this boot; the pid of that run follows.
const alreadyStarted = "vmpod: the command was already started: "

// commandWrapper is the guest side of the command, run with guest-exec as
//
//	/bin/sh -c commandWrapper vmpod-command STATE NONCE STDOUT STDERR DIR STDIN INNER CMD...
//
// Its errors before the command runs go to its own stderr, which qemu-ga
// captures: vmpod reports them as the start error. From then on stdout and
// stderr are the ports, and stdin is /dev/null (STDIN "null") or, for a
// container with stdin (STDIN "open"), a FIFO opened read-write: it stays
// open and empty, so a shell waits on it as it would on a container's
// unattached stdin instead of ending at once. INNER records the command's
// pid and execs it.
const commandWrapper = `s=$1 n=$2 o=$3 e=$4 d=$5 k=$6 i=$7
shift 7
umask 077
mkdir -p "$s" || exit 125
if ! (set -C; echo "$$" >"$s/command.pid") 2>/dev/null; then
	echo "` + alreadyStarted + `$(cat "$s/command.pid" 2>/dev/null)" >&2
	exit 125
fi
cd "$d" || { echo "vmpod: cannot change to the working directory $d" >&2; exit 125; }
[ -w "$o" ] && [ -w "$e" ] || { echo "vmpod: the guest has no $o or $e (udev makes these links)" >&2; exit 125; }
in=/dev/null
if [ "$k" = open ]; then
	in=$s/stdin
	rm -f "$in"
	mkfifo "$in" || { echo "vmpod: cannot make the command's stdin $in (mkfifo)" >&2; exit 125; }
fi
exec <>"$in" >"$o" 2>"$e"
/bin/sh -c "$i" vmpod "$@"
rc=$?
echo "$rc" >"$s/command.exit"
printf '\036%s:end:%d\n' "$n" "$rc"
printf '\036%s:end:%d\n' "$n" "$rc" >&2
exit "$rc"
`

// commandInner records the command's pid (for StopContainer's SIGTERM)
// and becomes the command; argv arrives as "$@", never through a shell
// line.
func commandInner(stateDir string) string {
	return `{ echo "$$" >` + shellQuote(stateDir+"/command.main") + `; } 2>/dev/null; exec "$@"`
}

// Command is a container's command as the guest runs it.
type Command struct {
	// Argv is the command followed by its args.
	Argv []string
	// Env is the whole environment, NAME=VALUE (see CommandEnv).
	Env []string
	// Dir is the absolute working directory ("" is /).
	Dir string
	// Stdout and Stderr are the guest devices of the output ports.
	Stdout, Stderr string
	// Nonce marks the wrapper's end lines on the ports. It is not a
	// secret (the command can read the wrapper's argv): it keeps output
	// that happens to hold 0x1E from ending the stream.
	Nonce string
	// StateDir is the guest directory of the pid and exit files (""
	// is CommandStateDir).
	StateDir string
	// Stdin keeps the command's stdin open (an empty FIFO) instead of
	// /dev/null: the container asked for stdin.
	Stdin bool
}

func (c Command) stdin() string {
	if c.Stdin {
		return "open"
	}
	return "null"
}

func (c Command) stateDir() string {
	if c.StateDir == "" {
		return CommandStateDir
	}
	return c.StateDir
}

func (c Command) dir() string {
	if c.Dir == "" {
		return "/"
	}
	return c.Dir
}

// wrapperArgv is the guest-exec argv of the command.
func (c Command) wrapperArgv() []string {
	return append([]string{"/bin/sh", "-c", commandWrapper, "vmpod-command",
		c.stateDir(), c.Nonce, c.Stdout, c.Stderr, c.dir(), c.stdin(), commandInner(c.stateDir())}, c.Argv...)
}

// CommandEnv is the command's environment: PATH (DefaultPath) and HOME
// (/root) unless env sets them, then env in order, as NAME=VALUE.
func CommandEnv(env [][2]string) []string {
	has := map[string]bool{}
	for _, kv := range env {
		has[kv[0]] = true
	}
	var out []string
	if !has["PATH"] {
		out = append(out, "PATH="+DefaultPath)
	}
	if !has["HOME"] {
		out = append(out, "HOME=/root")
	}
	for _, kv := range env {
		out = append(out, kv[0]+"="+kv[1])
	}
	return out
}

// Validate checks what the guest cannot take: NUL bytes (qemu-ga passes C
// strings), environment names that are empty or hold '=', a relative
// working directory, and more than CommandArgMax bytes in all. Its
// errors say what to fix; the caller wraps them as InvalidArgument.
func (c Command) Validate() error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return fmt.Errorf("the command is empty")
	}
	total := len(c.Dir)
	for i, a := range c.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("word %d of the command and args holds a NUL byte", i)
		}
		total += len(a) + 1
	}
	for _, kv := range c.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("environment variable %.64q: the name must be non-empty and without '=', and neither may hold a NUL byte", name)
		}
		total += len(kv) + 1
	}
	if c.Dir != "" && (!strings.HasPrefix(c.Dir, "/") || strings.IndexByte(c.Dir, 0) >= 0) {
		return fmt.Errorf("the working directory %q must be an absolute path", c.Dir)
	}
	if total > CommandArgMax {
		return fmt.Errorf("the command, args, environment and working directory add up to %d bytes; the guest agent takes them in one message, at most %d bytes", total, CommandArgMax)
	}
	return nil
}

// StartCommand starts the command in the guest and returns the wrapper's
// pid. An error wrapping ErrNotStarted means it certainly did not start.
func (a *Agent) StartCommand(ctx context.Context, c Command) (int, error) {
	argv := c.wrapperArgv()
	return a.exec(ctx, execArgs{Path: argv[0], Arg: argv[1:], Env: c.Env, CaptureOutput: true})
}

// CommandExit is what guest-exec-status says of the command's wrapper.
type CommandExit struct {
	// Exited is false while the command runs.
	Exited bool
	// Code is the command's exit code (128+N when killed by signal N),
	// 0 to 255; 255 when the agent said something else.
	Code int
	// StartError is the wrapper's own error when the command never ran
	// (its working directory is missing, the ports are not there).
	StartError string
	// RunningPID is set instead when the command was already started in
	// this boot: the wrapper of that run.
	RunningPID int
}

// CommandStatus asks how the command's wrapper pid is doing.
func (a *Agent) CommandStatus(ctx context.Context, pid int) (CommandExit, error) {
	st, err := a.Status(ctx, pid)
	if err != nil || !st.Exited {
		return CommandExit{}, err
	}
	ex := CommandExit{Exited: true, Code: st.Code()}
	if ex.Code < 0 || ex.Code > 255 {
		// No process exits so; the agent is the guest's to make up.
		ex.Code = 255
	}
	if msg := strings.TrimSpace(st.Stderr()); msg != "" {
		if rest, ok := strings.CutPrefix(msg, alreadyStarted); ok {
			if p, ok := parsePID(rest); ok {
				return CommandExit{RunningPID: p}, nil
			}
		}
		ex.StartError = printable(msg, startErrorMax)
	}
	return ex, nil
}

// SignalCommand sends sig (TERM, KILL) to the command's main process.
func (a *Agent) SignalCommand(ctx context.Context, stateDir, sig string) error {
	if stateDir == "" {
		stateDir = CommandStateDir
	}
	return a.Run(ctx, []string{"/bin/sh", "-c", `read p <"$1" && kill -"$2" "$p"`, "vmpod-signal", stateDir + "/command.main", sig})
}

// CommandTrace is what the guest's state files say of the command, for a
// vmpod that lost track of it (restarted, or qemu-ga forgot the process).
type CommandTrace struct {
	// PID is the wrapper of the run of this boot (0: none started).
	PID int
	// ExitCode is the code the wrapper recorded (nil: none yet).
	ExitCode *int
	// Alive says whether process PID (of the caller's question) exists.
	Alive bool
}

// TraceCommand reads the command's state files; pid (0: none) is the
// process whose liveness the caller wants to know.
func (a *Agent) TraceCommand(ctx context.Context, stateDir string, pid int) (CommandTrace, error) {
	if stateDir == "" {
		stateDir = CommandStateDir
	}
	script := `[ -r "$1/command.pid" ] && read p <"$1/command.pid" && echo "pid=$p"
[ -r "$1/command.exit" ] && read c <"$1/command.exit" && echo "exit=$c"
[ "$2" -gt 0 ] && kill -0 "$2" 2>/dev/null && echo alive
exit 0`
	res, err := a.RunCaptured(ctx, []string{"/bin/sh", "-c", script, "vmpod-trace", stateDir, strconv.Itoa(pid)}, nil, ProbePoll, 4096)
	if err != nil {
		return CommandTrace{}, err
	}
	return parseTrace(string(res.Stdout)), nil
}

// parseTrace reads TraceCommand's output; anything it does not expect
// (the guest's to write) is ignored.
func parseTrace(out string) CommandTrace {
	var t CommandTrace
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "pid="):
			if p, ok := parsePID(l[4:]); ok {
				t.PID = p
			}
		case strings.HasPrefix(l, "exit="):
			if c, err := strconv.Atoi(strings.TrimSpace(l[5:])); err == nil && c >= 0 && c <= 255 {
				t.ExitCode = &c
			}
		case l == "alive":
			t.Alive = true
		}
	}
	return t
}

// parsePID reads a guest pid (Linux's pid_max is at most 2^22).
func parsePID(s string) (int, bool) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	return p, err == nil && p > 0 && p <= 1<<22
}

// printable cuts s to max bytes and replaces what is not printable, so a
// guest's text is safe in a status message and a log.
func printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, strings.ToValidUTF8(s, "?"))
}

// OutputFilter takes the wrapper's end line out of a command output port's
// stream: what comes before it is output, it ends the stream, and what
// follows (a background process still writing) is dropped.
type OutputFilter struct{ s ttyStream }

// NewOutputFilter returns the filter of a command started with nonce.
func NewOutputFilter(nonce string) *OutputFilter {
	return &OutputFilter{s: ttyStream{prefix: []byte("\x1e" + nonce + ":"), begun: true}}
}

// Feed takes the next bytes of the stream and returns the output in them
// and whether the end line came.
func (f *OutputFilter) Feed(p []byte) ([]byte, bool) {
	out, _ := f.s.feed(p)
	return out, f.s.ended
}

// NewNonce returns a fresh random nonce for a command's end lines.
func NewNonce() (string, error) { return newNonce() }
