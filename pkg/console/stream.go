package console

import (
	"errors"
	"net"
	"os"
)

// ConsolePrefix starts every console line in the log of a container whose
// command has output streams, so a reader tells them apart: the command's
// output is logged as it wrote it, the console's lines as
// "[console] <line>".
const ConsolePrefix = "[console] "

// Filter sees a stream's bytes before they are logged: it returns the
// output in p and whether the stream ended (its writer said so). It is
// called from one goroutine.
type Filter interface {
	Feed(p []byte) (out []byte, ended bool)
}

// StreamOptions is one output port of a container's command.
type StreamOptions struct {
	// Name is the CRI stream it is logged as: "stdout" or "stderr".
	Name string
	// SocketPath is the unix socket QEMU listens on for the port.
	SocketPath string
	// Filter, when set, sees the bytes first (the wrapper's end line).
	Filter Filter
}

// stream reads one output port into the log. Its goroutine owns lines and
// out.
type stream struct {
	c         *Console
	opts      StreamOptions
	lines     *lineSplitter
	out       []byte
	connected chan struct{}
	ended     chan struct{}
	conn      net.Conn // guarded by c.mu
}

// startStreams starts a goroutine per output stream, and the one that
// closes allConnected and streamsEnded.
func (c *Console) startStreams() {
	waitConnected := []<-chan struct{}{c.connected}
	var waitEnded []<-chan struct{}
	for _, o := range c.opts.Streams {
		lines := newLineSplitter(c.opts.MaxLineLen)
		lines.stream = o.Name
		st := &stream{c: c, opts: o, lines: lines, connected: make(chan struct{}), ended: make(chan struct{})}
		c.streams = append(c.streams, st)
		waitConnected = append(waitConnected, st.connected)
		waitEnded = append(waitEnded, st.ended)
		c.streamsWG.Add(1)
		go st.run()
	}
	go func() {
		if waitAll(c, waitConnected) {
			close(c.allConnected)
		}
	}()
	go func() {
		if waitAll(c, waitEnded) {
			close(c.streamsEnded)
		}
	}()
}

// waitAll waits for every channel, or the Console's Close (false).
func waitAll(c *Console, chans []<-chan struct{}) bool {
	for _, ch := range chans {
		select {
		case <-ch:
		case <-c.ctx.Done():
			return false
		}
	}
	return true
}

// OutputEnded is closed once every output stream ended: its end line came
// (Filter), or its connection closed (QEMU exited). What the stream carried
// is in the log by then. Without streams it is closed at once.
func (c *Console) OutputEnded() <-chan struct{} { return c.streamsEnded }

// run connects once and logs the stream until it ends or the Console is
// closed. A stream is read by one connection only: after it ends, the
// guest's port carries nothing vmpod logs.
func (st *stream) run() {
	defer st.c.streamsWG.Done()
	conn := st.c.dialSocket(st.opts.SocketPath, st.opts.Name+" stream", func(conn net.Conn) bool {
		st.c.mu.Lock()
		defer st.c.mu.Unlock()
		if st.c.closed {
			return false
		}
		st.conn = conn
		return true
	})
	if conn == nil {
		st.finish()
		return
	}
	close(st.connected)
	defer conn.Close()
	buf := make([]byte, readBufSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			data, ended := buf[:n], false
			if st.opts.Filter != nil {
				data, ended = st.opts.Filter.Feed(data)
			}
			st.write(st.lines.feed(st.out[:0], data, st.c.stamp()))
			if ended {
				st.finish()
				return
			}
		}
		if err != nil {
			if st.c.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				st.c.log.Info(st.opts.Name+" stream ended", "path", st.opts.SocketPath, "err", err)
			}
			st.finish()
			return
		}
	}
}

// finish logs the last line whole and marks the stream ended.
func (st *stream) finish() {
	st.write(st.lines.finish(st.out[:0], st.c.stamp()))
	close(st.ended)
}

func (st *stream) write(b []byte) {
	st.out = b[:0]
	st.c.logf.write(b)
}

// closeConn ends a connected stream's read (Close).
func (st *stream) closeConn() {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.conn != nil {
		st.conn.Close()
	}
}
