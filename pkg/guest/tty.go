package guest

// TTY exec. The guest agent cannot carry one: guest-exec takes a process's
// stdin once, at start, hands out its output only after it exited, and
// gives it no terminal. So every VM has ExecPorts extra virtio-serial
// ports (vmpod.exec.N, each a unix socket QEMU binds in the VM's run
// directory), and a TTY exec is:
//
//	vmpod                                   guest
//	  take a free port N, connect to
//	  its socket (QEMU accepts)
//	  guest-exec: setsid sh -c ttyWrapper ... ──> wrapper opens
//	                                            /dev/virtio-ports/vmpod.exec.N
//	  <── \x1e<nonce>:begin ─────────────────── as stdin, stdout and stderr
//	  client stdin ───────────────────────────> script -q -e -c INNER /dev/null
//	  <── \x1e<nonce>:tty=/dev/pts/K ─────────── (a new pty session): INNER
//	  client output <─────────────────────────── sets the size, says its tty,
//	  resize: guest-exec stty <tty ...            execs the command (argv,
//	                                              each word single-quoted)
//	  <── \x1e<nonce>:end:CODE ──────────────── script returns the command's
//	  guest-exec-status: exit code CODE         exit code; so does the wrapper
//
// Control lines start with \x1e (a byte text does not hold, so no output is
// held back waiting to see if a control line starts) and a fresh random
// nonce; vmpod drops them, and anything before the begin line, from what
// the client sees. The guest needs qemu-ga, setsid, util-linux script, a
// POSIX sh and the /dev/virtio-ports links (udev makes them).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/logging"
)

// ExecPorts is how many exec channels each VM has, so how many TTY execs
// it can run at once.
const ExecPorts = 4

// Channel is one exec channel of a VM: a virtio-serial port QEMU binds as a
// unix socket on the host.
type Channel struct {
	// Socket is the host side: the unix socket QEMU listens on.
	Socket string
	// Device is the guest side: the port's path in the guest, e.g.
	// /dev/virtio-ports/vmpod.exec.0 (udev makes the link).
	Device string
}

// Size is a terminal size in characters.
type Size struct {
	Width, Height uint16
}

// ErrClientGone ends an exec whose client can no longer be written to.
var ErrClientGone = errors.New("the exec client went away")

// ttyWrapper is the guest side of a TTY exec, run with guest-exec as
//
//	setsid sh -c ttyWrapper vmpod-exec PORT NONCE INNER
//
// setsid makes it the leader of a new process group (keeping the pid
// guest-exec returned), so one kill -9 -PID ends it and script. It opens
// the port once for stdin, stdout and stderr (a virtio port opens only
// once) and runs INNER, a shell command, under util-linux script, which
// gives it a new session on a pseudo-terminal, copies between the port and
// the terminal, and with -e returns its exit code. The echo on the
// terminal stays on (stdin is no terminal), as a remote shell wants.
// Lines to the port without the terminal end in \r\n, as the client's
// terminal is raw.
const ttyWrapper = `exec <>"$1" >&0 2>&0 || exit 125
printf '\036%s:begin\n' "$2"
if command -v script >/dev/null 2>&1; then
	TERM=xterm SHELL=/bin/sh script -q -e -c "$3" /dev/null
	rc=$?
else
	printf 'vmpod: a TTY exec needs the script command (util-linux) in the guest\r\n'
	rc=127
fi
printf '\036%s:end:%d\n' "$2" "$rc"
exit "$rc"
`

// ttyInner is the shell command script runs: set the terminal size when
// known, report the terminal's name (for later resizes), then exec cmd.
// cmd is argv: each word is single-quoted, so the guest shell runs it
// as given, with no expansion.
func ttyInner(nonce string, cmd []string, size *Size) string {
	var b strings.Builder
	if size != nil && size.Width > 0 && size.Height > 0 {
		fmt.Fprintf(&b, "stty rows %d cols %d 2>/dev/null; ", size.Height, size.Width)
	}
	fmt.Fprintf(&b, `printf '\036%%s:tty=%%s\n' %s "$(tty)"; exec`, shellQuote(nonce))
	for _, a := range cmd {
		b.WriteByte(' ')
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

// ttyWrapperArgv is the guest-exec argv of a TTY exec over the guest
// port device.
func ttyWrapperArgv(device, nonce string, cmd []string, size *Size) []string {
	return []string{"setsid", "sh", "-c", ttyWrapper, "vmpod-exec", device, nonce, ttyInner(nonce, cmd, size)}
}

// shellQuote quotes s as one word for a POSIX shell: inside single quotes
// nothing is special, and each single quote of s is written as
//
//	'\''
//
// (end the quoted part, an escaped quote, start a new quoted part).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PortSet tracks which of a VM's exec channels carry a session.
type PortSet struct {
	mu    sync.Mutex
	inUse [ExecPorts]bool
}

// Acquire takes a free port.
func (p *PortSet) Acquire() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, used := range p.inUse {
		if !used {
			p.inUse[n] = true
			return n, true
		}
	}
	return 0, false
}

// Release gives port n back.
func (p *PortSet) Release(n int) {
	p.mu.Lock()
	p.inUse[n] = false
	p.mu.Unlock()
}

// Free counts the free ports.
func (p *PortSet) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, used := range p.inUse {
		if !used {
			n++
		}
	}
	return n
}

// ttyInitialSizeWait is how long a TTY exec waits for the client's first
// terminal size, so the command starts with it.
const ttyInitialSizeWait = 200 * time.Millisecond

// ttyEndGrace is how long a TTY exec waits for the last of the stream (or
// for the wrapper's exit status) once the other has arrived.
const ttyEndGrace = 3 * time.Second

// FirstSize waits briefly for the client's first terminal size, so the
// command starts with it; nil when none came.
func FirstSize(resize <-chan Size) *Size {
	if resize == nil {
		return nil
	}
	select {
	case sz, ok := <-resize:
		if ok {
			return &sz
		}
	case <-time.After(ttyInitialSizeWait):
	}
	return nil
}

// RunTTY runs cmd on a pseudo-terminal of size (nil: the default) in the
// guest, streaming over the exec channel ch (which the caller holds for
// the session), with later sizes from resize; it returns the command's
// exit code. Output goes to out (nil drops it); a failed write to out ends
// the session with ErrClientGone. When ctx ends first (the client went
// away), the guest session is killed.
func (a *Agent) RunTTY(ctx context.Context, ch Channel, cmd []string, in io.Reader, out io.Writer, size *Size, resize <-chan Size) (int, error) {
	conn, err := net.DialTimeout("unix", ch.Socket, CallTimeout)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("the VM has no exec channel %s (it was defined by an older vmpod); recreate the container for TTY exec: %w",
				ch.Device, errdefs.ErrFailedPrecondition)
		}
		return 0, fmt.Errorf("connect to exec channel %s: %w", ch.Socket, err)
	}
	defer conn.Close()
	nonce, err := newNonce()
	if err != nil {
		return 0, err
	}
	pid, err := a.Exec(ctx, ttyWrapperArgv(ch.Device, nonce, cmd, size), nil)
	if err != nil {
		return 0, err
	}
	t := &ttySession{
		agent: a, pid: pid, conn: conn, out: out,
		stream:  ttyStream{prefix: []byte("\x1e" + nonce + ":")},
		begun:   make(chan struct{}),
		ttyPath: make(chan string, 1),
		end:     make(chan int, 1),
		readErr: make(chan error, 1),
		exited:  make(chan ExecStatus, 1),
		hurry:   make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go t.read(cancel)
	go t.pollStatus(ctx)
	if in != nil {
		go t.copyStdin(ctx, in)
	}
	if resize != nil {
		go t.resize(ctx, resize, size)
	}
	return t.wait(ctx)
}

func newNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// ttySession is one running TTY exec.
type ttySession struct {
	agent  *Agent
	pid    int
	conn   net.Conn
	out    io.Writer // nil: output dropped
	stream ttyStream

	begun   chan struct{}   // closed on the begin line
	ttyPath chan string     // the guest terminal, once
	end     chan int        // the end line's exit code, once
	readErr chan error      // the exec channel failed or closed
	exited  chan ExecStatus // the wrapper exited
	hurry   chan struct{}   // poll the wrapper's status now
}

// read copies the guest's stream to the client and passes the control
// lines on. A failed write to the client cancels the session.
func (t *ttySession) read(cancel context.CancelCauseFunc) {
	buf := make([]byte, 32<<10)
	begun := false
	for {
		n, err := t.conn.Read(buf)
		if n > 0 {
			data, lines := t.stream.feed(buf[:n])
			if len(data) > 0 && t.out != nil {
				if _, werr := t.out.Write(data); werr != nil {
					cancel(fmt.Errorf("%w: %v", ErrClientGone, werr))
					return
				}
			}
			for _, l := range lines {
				switch {
				case l == "begin" && !begun:
					begun = true
					close(t.begun)
				case strings.HasPrefix(l, "tty="):
					select {
					case t.ttyPath <- strings.TrimPrefix(l, "tty="):
					default:
					}
				case strings.HasPrefix(l, "end:"):
					code, perr := strconv.Atoi(strings.TrimPrefix(l, "end:"))
					if perr != nil {
						code = 255
					}
					t.end <- code
					return
				}
			}
		}
		if err != nil {
			t.readErr <- err
			return
		}
	}
}

// copyStdin forwards the client's input once the wrapper is running. At
// its end it sends the terminal's EOF character (^D), as util-linux
// script does when its input ends.
func (t *ttySession) copyStdin(ctx context.Context, in io.Reader) {
	select {
	case <-t.begun:
	case <-ctx.Done():
		return
	}
	if _, err := io.Copy(t.conn, in); err == nil {
		t.conn.Write([]byte{0x04})
	}
}

// resize applies the client's terminal sizes to the guest terminal (stty
// through guest-exec; setting the size signals SIGWINCH to the command),
// skipping sizes the client sent while one was being applied but the last.
func (t *ttySession) resize(ctx context.Context, resize <-chan Size, applied *Size) {
	var tty string
	var pending *Size
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-t.ttyPath:
			if strings.HasPrefix(p, "/dev/") {
				tty = p
			}
		case sz, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			pending = &sz
		drain:
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						resize = nil
						break drain
					}
					pending = &sz
				default:
					break drain
				}
			}
		}
		if tty == "" || pending == nil || (applied != nil && *pending == *applied) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*CallTimeout)
		err := t.agent.Run(rctx, []string{"sh", "-c", `stty rows "$2" cols "$3" <"$1"`, "vmpod-resize",
			tty, strconv.Itoa(int(pending.Height)), strconv.Itoa(int(pending.Width))})
		cancel()
		if err != nil && ctx.Err() == nil {
			logging.From(ctx).Debug("could not resize the guest terminal", "tty", tty, logging.KeyErr, err)
		}
		applied, pending = pending, nil
	}
}

// pollStatus polls the wrapper's guest-exec-status, every second while the
// session runs (to notice a wrapper that died without its end line) and
// fast once hurried (the end line came: its exit is due), until it exits.
// It is the only poller: qemu-ga reports an exit once.
func (t *ttySession) pollStatus(ctx context.Context) {
	poll := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		case <-t.hurry:
			poll = 10 * time.Millisecond
		}
		st, err := t.agent.Status(ctx, t.pid)
		if err == nil && st.Exited {
			t.exited <- st
			return
		}
		if poll < time.Second {
			poll = min(2*poll, 200*time.Millisecond)
		}
	}
}

// wait returns the command's exit code once the end line came and the
// wrapper exited, or an error; when ctx ends first it kills the session's
// process group.
func (t *ttySession) wait(ctx context.Context) (int, error) {
	var (
		endCode, haveEnd = 0, false
		status           *ExecStatus
		grace            <-chan time.Time
	)
	for {
		select {
		case code := <-t.end:
			endCode, haveEnd = code, true
			if status != nil {
				return endCode, nil
			}
			select {
			case t.hurry <- struct{}{}:
			default:
			}
			grace = time.After(ttyEndGrace)
		case st := <-t.exited:
			status = &st
			if haveEnd {
				return endCode, nil
			}
			select {
			case <-t.begun:
			default:
				return 0, fmt.Errorf("the guest could not start it (exit code %d): %s", st.Code(), strings.TrimSpace(st.Stderr()))
			}
			grace = time.After(ttyEndGrace)
		case <-grace:
			if haveEnd {
				// The wrapper exits right after its end line: it is
				// stuck, or the agent is slow. The code is known.
				t.agent.Kill(ctx, t.pid, true)
				return endCode, nil
			}
			// The wrapper died without its end line (killed in the guest).
			return status.Code(), nil
		case err := <-t.readErr:
			t.agent.Kill(ctx, t.pid, true)
			return 0, fmt.Errorf("the exec channel closed (did the VM stop?): %w", err)
		case <-ctx.Done():
			t.agent.Kill(ctx, t.pid, true)
			return 0, fmt.Errorf("ended before the command (the guest session was killed): %w", context.Cause(ctx))
		}
	}
}
