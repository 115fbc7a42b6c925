package libvirttools

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// These tests put a proxy between the client and the real libvirtd
// (VMPOD_LIBVIRT_TEST=1) to play libvirtd's faults on this test's
// connections only: cut (libvirtd restarted: every connection closes) and
// freeze (libvirtd hung: nothing gets through). They use libvirtd's test
// driver (test+unix:///default: one running domain "test", no QEMU), so
// other users of the libvirtd see nothing.

type proxy struct {
	path, upstream string
	l              net.Listener
	accepted       atomic.Int32

	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	conns  []net.Conn
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	libvirtURI(t) // skips without VMPOD_LIBVIRT_TEST=1
	p := &proxy{path: filepath.Join(t.TempDir(), "sock"), upstream: "/run/libvirt/libvirt-sock"}
	p.cond = sync.NewCond(&p.mu)
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.l = l
	go p.serve()
	t.Cleanup(func() { p.thaw(); l.Close(); p.cut() })
	return p
}

func (p *proxy) uri() string { return "test+unix:///default?socket=" + p.path }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		up, err := net.Dial("unix", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst, holding every chunk while frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}

// cut closes every connection, as a libvirtd that exits does.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) freeze() { p.mu.Lock(); p.frozen = true; p.mu.Unlock() }

func (p *proxy) thaw() {
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// TestLibvirtRestartInvisible: libvirtd "restarts" (every connection is
// closed) three times while calls run without a pause: none fails, the
// connection is made again each time without a call, and events resume
// on the new connection.
func TestLibvirtRestartInvisible(t *testing.T) {
	p := newProxy(t)
	ctx := context.Background()
	l := NewLibvirt(p.uri(), Options{Events: true, CallTimeout: 10 * time.Second})
	defer l.Close()
	sub, err := l.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, sub, EventConnected)

	stop := make(chan struct{})
	var calls, failed atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if _, err := l.Status(ctx, "test"); err != nil {
					failed.Add(1)
					t.Errorf("Status: %v", err)
				}
				if _, err := l.List(ctx, ""); err != nil {
					failed.Add(1)
					t.Errorf("List: %v", err)
				}
			}
		})
	}
	for i := range 3 {
		time.Sleep(200 * time.Millisecond)
		p.cut()
		start := time.Now()
		nextEvent(t, sub, EventConnected)
		t.Logf("restart %d: reconnected and watching events %v after the cut", i+1, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d Status+List rounds, %d failed, %d connections made", calls.Load(), failed.Load(), p.accepted.Load())
	if p.accepted.Load() < 4 {
		t.Fatalf("%d connections made for three restarts", p.accepted.Load())
	}

	// Events resume: the new connection reports a destroy.
	if st, err := l.Status(ctx, "test"); err != nil {
		t.Fatal(err)
	} else if st.State == DomainShutoff {
		wantClass(t, "Start", l.Start(ctx, "test", false), nil)
	}
	wantClass(t, "Destroy", l.Destroy(ctx, "test"), nil)
	if ev := nextEvent(t, sub, EventDomain); ev.Domain.Name != "test" || ev.Domain.Reason != ShutoffDestroyed {
		t.Fatalf("event after the restarts: %+v", ev.Domain)
	}
	wantClass(t, "Start", l.Start(ctx, "test", false), nil)
}

// TestLibvirtHungCalls: a hung libvirtd makes calls fail with Unavailable
// at their deadline; once MaxAbandonedCalls are hung, new ones are
// refused at once; when libvirtd answers again, the hung calls finish and
// calls work.
func TestLibvirtHungCalls(t *testing.T) {
	p := newProxy(t)
	ctx := context.Background()
	l := NewLibvirt(p.uri(), Options{CallTimeout: 300 * time.Millisecond})
	defer l.Close()
	if _, err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	p.freeze()
	start := time.Now()
	_, err := l.Status(ctx, "test")
	if took := time.Since(start); !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, ErrCallTimeout) || took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Status against a hung libvirtd: %v after %v", err, took)
	}
	// A burst of calls: each one is given up at its deadline.
	burst := func() (refused int32, took time.Duration) {
		var wg sync.WaitGroup
		var n atomic.Int32
		start := time.Now()
		for range MaxAbandonedCalls {
			wg.Go(func() {
				_, err := l.List(ctx, "")
				if !errors.Is(err, errdefs.ErrUnavailable) {
					t.Errorf("List: %v", err)
				}
				if errors.Is(err, errRefused) {
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return n.Load(), time.Since(start)
	}
	if _, took := burst(); took > 2*time.Second {
		t.Errorf("%d calls took %v with a 300ms deadline", MaxAbandonedCalls, took)
	}
	hung := l.calls.Abandoned()
	t.Logf("%d calls hung", hung)
	if hung < MaxAbandonedCalls {
		t.Fatalf("%d abandoned calls, want at least %d", hung, MaxAbandonedCalls)
	}
	// Past the bound, calls are refused at once and no more pile up.
	refused, took := burst()
	if refused != MaxAbandonedCalls || took > 200*time.Millisecond || l.calls.Abandoned() != hung {
		t.Fatalf("past the bound: %d of %d refused in %v, %d abandoned (were %d)", refused, MaxAbandonedCalls, took, l.calls.Abandoned(), hung)
	}
	p.thaw()
	waitAbandoned(t, &l.calls, 0)
	if _, err := l.Status(ctx, "test"); err != nil {
		t.Fatalf("Status after libvirtd answers again: %v", err)
	}
}

// TestLibvirtKeepalive: a connection to a hung libvirtd is closed by the
// keepalive within about 20 s, which ends the calls blocked on it, even
// with no further call; after that, calls connect again.
func TestLibvirtKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 20 s")
	}
	p := newProxy(t)
	ctx := context.Background()
	l := NewLibvirt(p.uri(), Options{CallTimeout: 300 * time.Millisecond})
	defer l.Close()
	if _, err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	p.freeze()
	start := time.Now()
	if _, err := l.Status(ctx, "test"); !errors.Is(err, ErrCallTimeout) {
		t.Fatalf("Status against a hung libvirtd: %v", err)
	}
	for l.calls.Abandoned() != 0 {
		if time.Since(start) > 40*time.Second {
			t.Fatal("the hung call still runs after 40 s: no keepalive?")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the keepalive ended the hung call %v after it started", time.Since(start).Round(100*time.Millisecond))
	p.thaw()
	if _, err := l.Status(ctx, "test"); err != nil {
		t.Fatalf("Status after libvirtd answers again: %v", err)
	}
}
