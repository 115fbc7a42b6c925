package console

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// endFilter ends a stream at the line "END\n" (the guest's wrapper writes
// a nonce-marked line; pkg/guest tests that one).
type endFilter struct{ ended bool }

func (f *endFilter) Feed(p []byte) ([]byte, bool) {
	if f.ended {
		return nil, true
	}
	if i := bytes.Index(p, []byte("END\n")); i >= 0 {
		f.ended = true
		return p[:i], true
	}
	return p, false
}

func streamLine(stream, rest string) string { return ts + " " + stream + " " + rest + "\n" }

// TestStreams: the command's stdout and stderr are logged as their CRI
// streams, whole lines each, beside the console, whose lines carry the
// prefix and are not flushed half-way by the timer; the end line ends a
// stream and closes OutputEnded, and what follows it is not logged.
func TestStreams(t *testing.T) {
	sock, logPath := paths(t)
	dir := filepath.Dir(sock)
	outSock, errSock := filepath.Join(dir, "out.sock"), filepath.Join(dir, "err.sock")
	q := newFakeQEMU(t, sock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath, PartialFlush: time.Millisecond, MaxLineLen: 8,
		Streams: []StreamOptions{
			{Name: "stdout", SocketPath: outSock, Filter: &endFilter{}},
			{Name: "stderr", SocketPath: errSock, Filter: &endFilter{}},
		}})
	con := q.accept(t)
	select {
	case <-c.Connected():
		t.Fatal("connected before the output streams are")
	case <-time.After(50 * time.Millisecond):
	}
	qo, qe := newFakeQEMU(t, outSock), newFakeQEMU(t, errSock)
	out, errc := qo.accept(t), qe.accept(t)
	select {
	case <-c.Connected():
	case <-time.After(timeout):
		t.Fatal("not connected")
	}

	send(t, con, "boot\r\n# ")
	waitFile(t, logPath, streamLine("stdout", "F [console] boot"))
	time.Sleep(20 * time.Millisecond) // the flush timer would have fired
	send(t, out, "out\n")
	waitFile(t, logPath, streamLine("stdout", "F [console] boot")+streamLine("stdout", "F out"))
	send(t, errc, "err1\nerr2\n")
	want := streamLine("stdout", "F [console] boot") + streamLine("stdout", "F out") +
		streamLine("stderr", "F err1") + streamLine("stderr", "F err2")
	waitFile(t, logPath, want) // (the streams are apart: their order in the file is the order they were read)
	send(t, out, "0123456789ab\nlast")
	waitFile(t, logPath, want+streamLine("stdout", "P 01234567")+streamLine("stdout", "F 89ab"))
	want += streamLine("stdout", "P 01234567") + streamLine("stdout", "F 89ab")
	select {
	case <-c.OutputEnded():
		t.Fatal("output ended early")
	default:
	}
	// The end line: the last line is whole, what follows is dropped.
	send(t, out, "END\nfrom a background process\n")
	want += streamLine("stdout", "F last")
	waitFile(t, logPath, want)
	send(t, errc, "END\n")
	select {
	case <-c.OutputEnded():
	case <-time.After(timeout):
		t.Fatal("output did not end")
	}
	// A long console line has the prefix once: the kubelet joins P lines.
	send(t, con, "ls\r\n0123456789ab\r\n")
	want += streamLine("stdout", "F [console] # ls") + streamLine("stdout", "P [console] 01234567") + streamLine("stdout", "F 89ab")
	waitFile(t, logPath, want)

	// Rotation reaches every writer.
	os.Rename(logPath, logPath+".1")
	if err := c.ReopenLog(); err != nil {
		t.Fatal(err)
	}
	send(t, con, "after\n")
	waitFile(t, logPath, streamLine("stdout", "F [console] after"))
}

// TestStreamEOF: a stream whose connection closes (QEMU exited) ends, its
// last line logged whole.
func TestStreamEOF(t *testing.T) {
	sock, logPath := paths(t)
	outSock := filepath.Join(filepath.Dir(sock), "out.sock")
	newFakeQEMU(t, sock)
	qo := newFakeQEMU(t, outSock)
	c := start(t, Options{SocketPath: sock, LogPath: logPath, Streams: []StreamOptions{{Name: "stdout", SocketPath: outSock}}})
	out := qo.accept(t)
	send(t, out, "partial")
	out.Close()
	select {
	case <-c.OutputEnded():
	case <-time.After(timeout):
		t.Fatal("output did not end")
	}
	checkFile(t, logPath, streamLine("stdout", "F partial"))
	c.Close()
	checkFile(t, logPath, streamLine("stdout", "F partial"))
}

func TestStreamOptionsInvalid(t *testing.T) {
	for name, st := range map[string]StreamOptions{
		"stream name": {Name: "stdlog", SocketPath: "/tmp/x.sock"},
		"no socket":   {Name: "stdout"},
		"long socket": {Name: "stderr", SocketPath: "/" + strings.Repeat("s", 107)},
	} {
		c, err := Start(Options{SocketPath: "/tmp/x.sock", LogPath: filepath.Join(t.TempDir(), "x.log"), Streams: []StreamOptions{st}})
		if !errdefs.IsInvalidArgument(err) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}
