package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const (
	ts      = "2024-05-01T10:00:00.123456789Z"
	timeout = 5 * time.Second
)

func fixedClock() time.Time {
	return time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
}

// logLines formats the expected log: each entry is "<tag> <text>".
func logLines(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(ts + " stdout " + l + "\n")
	}
	return b.String()
}

// fakeQEMU stands in for QEMU's chardev socket server: it listens on a unix
// socket and hands out the clients it accepts.
type fakeQEMU struct {
	ln    net.Listener
	conns chan net.Conn
}

func newFakeQEMU(t *testing.T, path string) *fakeQEMU {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	q := &fakeQEMU{ln: ln, conns: make(chan net.Conn, 8)}
	go func() {
		defer close(q.conns)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			q.conns <- conn
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for conn := range q.conns {
			conn.Close()
		}
	})
	return q
}

// accept returns the next client, failing the test if none connects.
func (q *fakeQEMU) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case conn := <-q.conns:
		t.Cleanup(func() { conn.Close() })
		return conn
	case <-time.After(timeout):
		t.Fatal("the console did not connect")
		return nil
	}
}

// paths returns a socket path and a log path (under a directory that does
// not exist yet) in a fresh temporary directory.
func paths(t *testing.T) (sock, logPath string) {
	dir := t.TempDir()
	if len(dir) > 80 { // keep the socket path under the 107-byte limit
		var err error
		if dir, err = os.MkdirTemp("", "vmpodcon"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return filepath.Join(dir, "ttyS0.sock"), filepath.Join(dir, "pods", "ctr", "0.log")
}

func start(t *testing.T, opts Options) *Console {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = fixedClock
	}
	if opts.DialRetry == 0 {
		opts.DialRetry = 10 * time.Millisecond
	}
	if opts.PartialFlush == 0 {
		opts.PartialFlush = time.Hour // tests that want the timer set it
	}
	c, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFile waits until the file at path holds exactly want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := os.ReadFile(path)
		if err == nil && string(got) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s =\n%q (err %v)\nwant\n%q", filepath.Base(path), got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s =\n%q\nwant\n%q", filepath.Base(path), got, want)
	}
}

// readFull reads len(want) bytes from r and compares them with want.
func readFull(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	errc := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, got)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(timeout):
		t.Fatalf("timed out reading %d bytes", len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func send(t *testing.T, conn net.Conn, s string) {
	t.Helper()
	if _, err := conn.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestStartInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "no socket", opts: Options{LogPath: "/tmp/x.log"}},
		{name: "no log", opts: Options{SocketPath: "/tmp/x.sock"}},
		{name: "socket path too long", opts: Options{SocketPath: "/" + strings.Repeat("s", 107), LogPath: "/tmp/x.log"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Start(tt.opts)
			if !errdefs.IsInvalidArgument(err) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("Start() error = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestLogFullLines(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	start(t, Options{SocketPath: sock, LogPath: logPath})
	conn := q.accept(t)

	send(t, conn, "[    0.000000] Linux version 6.1\r\nsecond line\nraw \xff\xfe\r\n\r\n")
	waitFile(t, logPath, logLines("F [    0.000000] Linux version 6.1", "F second line", "F raw \xff\xfe", "F "))

	fi, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o640 {
		t.Errorf("log file mode = %v, want 0640", perm)
	}
}

func TestPartialLineFlushedAfterTimeout(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	start(t, Options{SocketPath: sock, LogPath: logPath, PartialFlush: 20 * time.Millisecond})
	conn := q.accept(t)

	send(t, conn, "boot\r\nvm login: ")
	waitFile(t, logPath, logLines("F boot", "P vm login: "))
	send(t, conn, "root\r\n")
	waitFile(t, logPath, logLines("F boot", "P vm login: ", "F root"))
}

func TestLongLineSplit(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	start(t, Options{SocketPath: sock, LogPath: logPath, MaxLineLen: 8})
	conn := q.accept(t)

	send(t, conn, "0123456789abcdefXY\r\n01234567\r\n")
	waitFile(t, logPath, logLines("P 01234567", "P 89abcdef", "F XY", "F 01234567"))
}

// output returns n numbered console lines.
func output(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "line %04d\r\n", i)
	}
	return b.Bytes()
}

func outputLog(n int) string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf("F line %04d", i))
	}
	return logLines(lines...)
}

func TestSubscribersAndLogSeeSameBytes(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	conn := q.accept(t)
	var subs []*Subscription
	for range 2 {
		s, err := c.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}

	out := output(500)
	for rest := out; len(rest) > 0; {
		n := min(777, len(rest))
		send(t, conn, string(rest[:n]))
		rest = rest[n:]
	}
	for _, s := range subs {
		readFull(t, s, out)
	}
	waitFile(t, logPath, outputLog(500))
}

func TestSlowSubscriberBlocksNobody(t *testing.T) {
	const buf = 1024
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath, SubscriberBuffer: buf})
	conn := q.accept(t)
	slow, err := c.Subscribe() // never read until the end
	if err != nil {
		t.Fatal(err)
	}
	fast, err := c.Subscribe()
	if err != nil {
		t.Fatal(err)
	}

	// 22000 bytes, far beyond the buffer, in steps the fast subscriber
	// reads before the next is sent, so that only the slow one overflows.
	out := output(2000)
	for rest := out; len(rest) > 0; {
		n := min(550, len(rest))
		send(t, conn, string(rest[:n]))
		readFull(t, fast, rest[:n])
		rest = rest[n:]
	}
	waitFile(t, logPath, outputLog(2000))

	// Close waits for the reader goroutine, so every byte has been pushed.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(slow)
	if err != nil {
		t.Fatal(err)
	}
	if want := out[len(out)-buf:]; !bytes.Equal(got, want) {
		t.Errorf("slow subscriber read %q, want the last %d bytes %q", got, buf, want)
	}
	if d, want := slow.Dropped(), uint64(len(out)-buf); d != want {
		t.Errorf("slow.Dropped() = %d, want %d", d, want)
	}
	if d := fast.Dropped(); d != 0 {
		t.Errorf("fast.Dropped() = %d, want 0", d)
	}
}

func TestSubscriptionCloseDetachesOnly(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	conn := q.accept(t)
	s, err := c.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Read block
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if err != io.EOF {
			t.Errorf("blocked Read returned %v, want io.EOF", err)
		}
	case <-time.After(timeout):
		t.Fatal("Close did not unblock Read")
	}
	s.Close() // idempotent

	send(t, conn, "still logging\n")
	waitFile(t, logPath, logLines("F still logging"))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Errorf("Write after detach: %v", err)
	}
}

func TestWriteReachesGuest(t *testing.T) {
	sock, logPath := paths(t)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrNotConnected) || !errdefs.IsUnavailable(err) {
		t.Errorf("Write before connecting = %v, want ErrNotConnected (Unavailable)", err)
	}

	q := newFakeQEMU(t, sock)
	conn := q.accept(t)
	send(t, conn, "ready\n")
	waitFile(t, logPath, logLines("F ready")) // the console has the connection now

	if n, err := c.Write([]byte("root\n")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := c.Write([]byte("ls -l\n")); err != nil {
		t.Fatal(err)
	}
	readFull(t, conn, []byte("root\nls -l\n"))
}

func TestConnectsWhenSocketAppears(t *testing.T) {
	sock, logPath := paths(t)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	time.Sleep(50 * time.Millisecond) // several failed dials
	select {
	case <-c.Done():
		t.Fatal("Done closed before any connection")
	default:
	}

	// A stale socket file nobody listens on (QEMU gone) is retried too.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	time.Sleep(50 * time.Millisecond)
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	q := newFakeQEMU(t, sock)
	conn := q.accept(t)
	send(t, conn, "late boot\r\n")
	waitFile(t, logPath, logLines("F late boot"))
}

func TestPeerClose(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	conn := q.accept(t)
	send(t, conn, "reboot: Power down\r\n# ")

	// QEMU exits: the socket goes away and the connection is closed.
	q.ln.Close()
	conn.Close()
	select {
	case <-c.Done():
	case <-time.After(timeout):
		t.Fatal("Done not closed after the peer closed")
	}
	checkFile(t, logPath, logLines("F reboot: Power down", "P # "))
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Write after the peer closed = %v, want ErrNotConnected", err)
	}

	// The domain is started again: the console reconnects and appends.
	q2 := newFakeQEMU(t, sock)
	conn2 := q2.accept(t)
	send(t, conn2, "booting again\n")
	waitFile(t, logPath, logLines("F reboot: Power down", "P # ", "F booting again"))
}

func TestReopenLog(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath})
	conn := q.accept(t)
	send(t, conn, "one\r\n")
	waitFile(t, logPath, logLines("F one"))

	rotated := logPath + ".20240501-100000"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := c.ReopenLog(); err != nil {
		t.Fatal(err)
	}
	send(t, conn, "two\r\n")
	waitFile(t, logPath, logLines("F two"))
	checkFile(t, rotated, logLines("F one"))
}

func TestRestartAppendsToSameLog(t *testing.T) {
	sock, logPath := paths(t)
	q := newFakeQEMU(t, sock)
	opts := Options{SocketPath: sock, LogPath: logPath}
	c1 := start(t, opts)
	conn1 := q.accept(t)
	s, err := c1.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	send(t, conn1, "first\r\nhalf")
	readFull(t, s, []byte("first\r\nhalf")) // logged before it is fanned out

	// vmpod stops: the pending partial line is logged as P.
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, logPath, logLines("F first", "P half"))
	if n, err := conn1.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("QEMU side Read after Close = %d, %v; want io.EOF", n, err)
	}

	// vmpod starts again while the VM runs.
	start(t, opts)
	conn2 := q.accept(t)
	send(t, conn2, " and the rest\r\n")
	waitFile(t, logPath, logLines("F first", "P half", "F  and the rest"))
}

func TestCloseIdempotent(t *testing.T) {
	sock, logPath := paths(t)
	c := start(t, Options{SocketPath: sock, LogPath: logPath}) // never connects
	s, err := c.Subscribe()
	if err != nil {
		t.Fatal(err)
	}

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close() = %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("Close hangs while dialling")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}

	if n, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Subscription Read after Close = %d, %v; want io.EOF", n, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Subscribe(); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := c.ReopenLog(); !errors.Is(err, ErrClosed) {
		t.Errorf("ReopenLog after Close = %v, want ErrClosed", err)
	}
	select {
	case <-c.Done():
		t.Error("Done closed by Close")
	default:
	}
	checkFile(t, logPath, "")
}
