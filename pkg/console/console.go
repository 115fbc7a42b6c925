package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Defaults for the zero values in Options.
const (
	DefaultDialRetry        = 100 * time.Millisecond
	DefaultPartialFlush     = 100 * time.Millisecond
	DefaultMaxLineLen       = 16 << 10 // containerd's max_container_log_line_size
	DefaultSubscriberBuffer = 64 << 10
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

// readBufSize is how much is read from the socket at once.
const readBufSize = 32 << 10

var (
	// ErrNotConnected is returned by Write while no connection to the
	// console socket is established. It satisfies errdefs.IsUnavailable.
	ErrNotConnected = fmt.Errorf("serial console not connected: %w", errdefs.ErrUnavailable)
	// ErrClosed is returned by methods called after Close. It satisfies
	// errdefs.IsFailedPrecondition.
	ErrClosed = fmt.Errorf("serial console closed: %w", errdefs.ErrFailedPrecondition)
)

// Options configures a Console.
type Options struct {
	// SocketPath is the unix socket QEMU listens on for ttyS0 (the libvirt
	// <serial type='unix'> source path). Required; at most 107 bytes.
	SocketPath string
	// LogPath is the container's CRI log file. Created with mode 0640 (and
	// missing parent directories with 0755) if missing, appended to
	// otherwise. Required.
	LogPath string
	// Logger receives the Console's own messages (connected, disconnected,
	// log write failures). Default slog.Default().
	Logger *slog.Logger
	// Clock stamps log lines; only for tests. Timers use the real clock.
	// Default time.Now.
	Clock func() time.Time
	// DialRetry is how often to retry connecting while the socket does not
	// exist or refuses connections. Default DefaultDialRetry (100ms).
	DialRetry time.Duration
	// PartialFlush is how long an unterminated line may wait for its newline
	// before it is logged as a P line. Default DefaultPartialFlush (100ms).
	PartialFlush time.Duration
	// MaxLineLen is the longest text of one log line in bytes; longer lines
	// are split into P lines. Default DefaultMaxLineLen (16 KiB).
	MaxLineLen int
	// SubscriberBuffer is how many bytes of output each Subscription queues
	// for a slow reader before dropping the oldest. Default
	// DefaultSubscriberBuffer (64 KiB).
	SubscriberBuffer int
	// Streams are the output ports of the container's command, logged as
	// their CRI streams beside the console (see the package doc). When
	// there are any, console lines start with ConsolePrefix and are
	// logged only once whole (or MaxLineLen long), so that a console
	// prompt is not joined to the command's next line.
	Streams []StreamOptions
}

func (o *Options) setDefaults() error {
	if o.SocketPath == "" {
		return fmt.Errorf("console socket path is empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(o.SocketPath) > maxSocketPath {
		return fmt.Errorf("console socket path %q is longer than %d bytes: %w", o.SocketPath, maxSocketPath, errdefs.ErrInvalidArgument)
	}
	if o.LogPath == "" {
		return fmt.Errorf("console log path is empty: %w", errdefs.ErrInvalidArgument)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.DialRetry <= 0 {
		o.DialRetry = DefaultDialRetry
	}
	if o.PartialFlush <= 0 {
		o.PartialFlush = DefaultPartialFlush
	}
	if o.MaxLineLen <= 0 {
		o.MaxLineLen = DefaultMaxLineLen
	}
	if o.SubscriberBuffer <= 0 {
		o.SubscriberBuffer = DefaultSubscriberBuffer
	}
	for _, st := range o.Streams {
		if st.Name != streamStdout && st.Name != streamStderr {
			return fmt.Errorf("output stream %q: the CRI log has only stdout and stderr: %w", st.Name, errdefs.ErrInvalidArgument)
		}
		if st.SocketPath == "" || len(st.SocketPath) > maxSocketPath {
			return fmt.Errorf("output stream %s: socket path %q is empty or longer than %d bytes: %w", st.Name, st.SocketPath, maxSocketPath, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Console is the single reader of one VM's serial console socket; see the
// package documentation. Its methods are safe for concurrent use.
//
// State, driven by the goroutine started by Start:
//
//	         Start
//	           |
//	           v      dial fails: wait DialRetry
//	      +---------+ --------+
//	+---> | dialing | <-------+
//	|     +---------+
//	|          | connected
//	|          v
//	|     +-----------+  read: log, fan out
//	|     | connected |  PartialFlush expired: log P line
//	|     +-----------+
//	|          | peer closed (QEMU exited):
//	+----------+ log pending P line, close Done (first time)
//
//	Close, in any state: close the connection, stop the goroutine, log the
//	pending P line, close the log file, end all Subscriptions.
type Console struct {
	opts     Options
	log      *slog.Logger
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	exited   chan struct{} // closed when run returns
	done     chan struct{} // see Done
	doneOnce sync.Once
	// connected is closed at the first successful connection; see Connected.
	connected     chan struct{}
	connectedOnce sync.Once

	// Owned by the run goroutine, and by Close once run has returned.
	lines *lineSplitter
	out   []byte // formatted log lines, reused

	logf *logFile

	// streams are the command's output streams; streamsWG counts their
	// goroutines, streamsEnded is closed when all have ended.
	streams      []*stream
	streamsWG    sync.WaitGroup
	streamsEnded chan struct{}
	// allConnected is closed once the console and every stream connected.
	allConnected chan struct{}

	mu     sync.Mutex
	closed bool
	conn   net.Conn // nil while not connected
	subs   map[*Subscription]struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start opens the log file and starts the goroutine that connects to the
// console socket, in the background and again whenever the connection ends,
// until Close. It fails only on invalid options (errdefs.ErrInvalidArgument)
// or when the log file cannot be opened.
func Start(opts Options) (*Console, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	logf, err := openLogFile(opts.LogPath, opts.Logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Console{
		opts:         opts,
		log:          opts.Logger.With("socket", opts.SocketPath),
		ctx:          ctx,
		cancel:       cancel,
		exited:       make(chan struct{}),
		done:         make(chan struct{}),
		connected:    make(chan struct{}),
		lines:        newLineSplitter(opts.MaxLineLen),
		logf:         logf,
		streamsEnded: make(chan struct{}),
		allConnected: make(chan struct{}),
		subs:         make(map[*Subscription]struct{}),
	}
	if len(opts.Streams) > 0 {
		c.lines.prefix = []byte(ConsolePrefix)
	}
	c.startStreams()
	go c.run()
	return c, nil
}

// Done returns a channel closed the first time an established connection is
// closed by QEMU, after the pending partial line has been logged. QEMU closes
// it when it exits, so this normally means the guest powered off or the
// domain was destroyed; confirm with libvirt if it matters. The Console keeps
// trying to reconnect afterwards. Done is not closed by Close, nor if the
// Console never connected.
func (c *Console) Done() <-chan struct{} {
	return c.done
}

// Connected is closed once the Console has connected to the console
// socket and to every output stream's socket for the first time. A caller
// that starts the domain paused waits for it before resuming, so no boot
// output is lost.
func (c *Console) Connected() <-chan struct{} { return c.allConnected }

// Subscribe attaches a client: the returned Subscription yields the console
// output from now on, until it or the Console is closed. It fails with
// ErrClosed after Close.
func (c *Console) Subscribe() (*Subscription, error) {
	s := newSubscription(c, c.opts.SubscriberBuffer)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.subs[s] = struct{}{}
	return s, nil
}

func (c *Console) unsubscribe(s *Subscription) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
}

// Write sends p to the guest as console input. It fails with ErrNotConnected
// while the socket is not connected and ErrClosed after Close. It blocks
// while the guest does not consume input, until Close. Concurrent Writes
// (several attached clients) are not interleaved within one call.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	conn, closed := c.conn, c.closed
	c.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if conn == nil {
		return 0, ErrNotConnected
	}
	n, err := conn.Write(p)
	if err != nil {
		return n, fmt.Errorf("write to serial console: %w", err)
	}
	return n, nil
}

// ReopenLog closes the log file and opens LogPath again, for CRI
// ReopenContainerLog after the kubelet renamed the file for rotation. A
// partial line pending continues in the new file. On failure the old file
// stays in use. It fails with ErrClosed after Close.
func (c *Console) ReopenLog() error {
	return c.logf.reopen()
}

// Close disconnects from the socket, logs a pending partial line as a P line,
// closes the log file and ends all Subscriptions (their Read returns io.EOF
// after the queued output). The VM is not affected. Close is idempotent; every
// call returns the error of closing the log file, if any.
func (c *Console) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		conn := c.conn
		c.conn = nil
		c.mu.Unlock()
		c.cancel()
		if conn != nil {
			conn.Close()
		}
		for _, st := range c.streams {
			st.closeConn()
		}
		<-c.exited
		c.streamsWG.Wait()

		c.writeLog(c.lines.flushAll(c.out[:0], c.stamp()))
		c.closeErr = c.logf.close()

		c.mu.Lock()
		subs := c.subs
		c.subs = nil
		c.mu.Unlock()
		for s := range subs {
			s.end()
		}
	})
	return c.closeErr
}

// run is the Console's goroutine: dial, serve the connection, repeat.
func (c *Console) run() {
	defer close(c.exited)
	for {
		conn := c.dial()
		if conn == nil {
			return
		}
		c.serve(conn)
		if c.ctx.Err() != nil {
			return
		}
	}
}

// dial connects to the console socket (dialSocket).
func (c *Console) dial() net.Conn {
	return c.dialSocket(c.opts.SocketPath, "serial console", func(conn net.Conn) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return false
		}
		c.conn = conn
		c.connectedOnce.Do(func() { close(c.connected) })
		return true
	})
}

// dialSocket connects to path, retrying every DialRetry; keep installs the
// connection, or says the Console was closed. It returns nil when the
// Console is closed first.
func (c *Console) dialSocket(path, what string, keep func(net.Conn) bool) net.Conn {
	var d net.Dialer
	reported := false
	for {
		conn, err := d.DialContext(c.ctx, "unix", path)
		if err == nil {
			if !keep(conn) {
				conn.Close()
				return nil
			}
			c.log.Info(what+" connected", "path", path)
			return conn
		}
		if c.ctx.Err() != nil {
			return nil
		}
		if !reported {
			reported = true
			// Expected while the domain starts or after QEMU exited.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
				c.log.Debug(what+" not listening yet, retrying", "path", path, "err", err)
			} else {
				c.log.Warn("connect to "+what+", retrying", "path", path, "err", err)
			}
		}
		t := time.NewTimer(c.opts.DialRetry)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// serve reads conn until it fails. A partial line is flushed when it has
// waited PartialFlush, using the read deadline as the timer so that one
// goroutine owns the line splitter.
func (c *Console) serve(conn net.Conn) {
	buf := make([]byte, readBufSize)
	armed := false // a read deadline is set for the pending line
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			c.writeLog(c.lines.feed(c.out[:0], buf[:n], c.stamp()))
			c.fanOut(buf[:n])
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.writeLog(c.lines.flush(c.out[:0], c.stamp()))
		} else if err != nil {
			c.disconnected(conn, err)
			return
		}
		switch flushable := c.lines.flushable() && len(c.opts.Streams) == 0; {
		case flushable && !armed:
			// Only when the line becomes flushable, so that a line
			// trickling in is still flushed PartialFlush after it began.
			armed = conn.SetReadDeadline(time.Now().Add(c.opts.PartialFlush)) == nil
		case !flushable && armed:
			conn.SetReadDeadline(time.Time{})
			armed = false
		}
	}
}

// disconnected handles the end of conn: by Close, or by the peer.
func (c *Console) disconnected(conn net.Conn, err error) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	c.mu.Unlock()
	conn.Close()
	if c.ctx.Err() != nil {
		return // Close flushes.
	}
	c.log.Info("serial console disconnected", "err", err)
	c.writeLog(c.lines.flushAll(c.out[:0], c.stamp()))
	c.doneOnce.Do(func() { close(c.done) })
}

// fanOut hands p to every Subscription.
func (c *Console) fanOut(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		s.push(p)
	}
}

// writeLog appends formatted lines to the log file and keeps the grown
// buffer.
func (c *Console) writeLog(b []byte) {
	c.out = b[:0]
	c.logf.write(b)
}

func (c *Console) stamp() string {
	return criTimestamp(c.opts.Clock())
}
