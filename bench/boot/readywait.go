package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// readyLine is what the test guest prints on ttyS0 when it has booted.
var readyLine = []byte("vmpod-test-guest ready")

// matcher finds readyLine in a stream read in chunks.
type matcher struct{ tail []byte }

func (m *matcher) feed(p []byte) bool {
	m.tail = append(m.tail, p...)
	if bytes.Contains(m.tail, readyLine) {
		return true
	}
	if keep := len(readyLine) - 1; len(m.tail) > keep {
		m.tail = append(m.tail[:0], m.tail[len(m.tail)-keep:]...)
	}
	return false
}

// logWatcher waits for the ready line in a container's CRI log file. It
// watches the file's directory with inotify, so a write is seen within
// microseconds, and also re-reads every poll interval in case an event is
// missed. The directory is created beforehand, as the kubelet does for a
// container's log directory.
type logWatcher struct {
	path string
	poll time.Duration
	ino  int
	f    *os.File
	m    matcher
	buf  []byte
}

func newLogWatcher(path string, poll time.Duration) (*logWatcher, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	return &logWatcher{path: path, poll: poll, ino: fd, buf: make([]byte, 32<<10)}, nil
}

func (w *logWatcher) close() {
	if w.f != nil {
		w.f.Close()
	}
	unix.Close(w.ino)
}

// check reads what was appended since the last call and reports whether the
// ready line is in the file.
func (w *logWatcher) check() bool {
	if w.f == nil {
		f, err := os.Open(w.path)
		if err != nil {
			return false
		}
		w.f = f
	}
	for {
		n, err := w.f.Read(w.buf)
		if n > 0 && w.m.feed(w.buf[:n]) {
			return true
		}
		if err != nil || n == 0 {
			return false
		}
	}
}

// wait blocks until the ready line is in the log and returns when it was
// seen. Until deadline; alive is called now and then (after aliveAfter) and
// ends the wait early with its error, e.g. when the VM exited.
func (w *logWatcher) wait(deadline time.Time, aliveAfter time.Duration, alive func() error) (time.Time, error) {
	start := time.Now()
	nextAlive := start.Add(aliveAfter)
	ev := make([]byte, 4096)
	for {
		if w.check() {
			return time.Now(), nil
		}
		now := time.Now()
		if now.After(deadline) {
			return now, fmt.Errorf("no %q in %s within %v", readyLine, w.path, deadline.Sub(start).Round(time.Second))
		}
		if alive != nil && now.After(nextAlive) {
			if err := alive(); err != nil {
				return now, err
			}
			nextAlive = now.Add(5 * time.Second)
		}
		pfd := []unix.PollFd{{Fd: int32(w.ino), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(w.poll/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
			time.Sleep(w.poll)
		}
		for { // drain the events; which file changed does not matter
			if _, err := unix.Read(w.ino, ev); err != nil {
				break
			}
		}
	}
}

// waitSerial connects to a QEMU serial socket (retrying while it does not
// exist yet) and reads until the ready line. It returns when the connection
// was made and when the line was read; conn stays open for the caller to
// close after destroying the domain (QEMU stalls a UART nobody reads, and
// drops unread bytes when the client hangs up).
func waitSerial(path string, deadline time.Time) (conn net.Conn, connected, ready time.Time, err error) {
	for {
		conn, err = net.DialTimeout("unix", path, time.Until(deadline))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, time.Time{}, fmt.Errorf("connect to serial socket %s: %w", path, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	connected = time.Now()
	conn.SetReadDeadline(deadline)
	var m matcher
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 && m.feed(buf[:n]) {
			return conn, connected, time.Now(), nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("serial socket closed (QEMU exited?) before %q", readyLine)
			}
			return conn, connected, time.Time{}, err
		}
	}
}
