// Package lifecycletest holds hand-written fakes of the VM pod lifecycle's
// dependencies (image store, overlay maker, console readers, clock, pod
// network) and Env, a lifecycle.Controller built over them, the stateful
// libvirt fake and a real metadata store. pkg/lifecycle's and pkg/cri's
// tests share them.
package lifecycletest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// Images the fake image store holds.
var (
	// ImageDebian is an OCI-style image: its ID is not the digest of its
	// disk file.
	ImageDebian = image.Image{
		ID: "sha256:" + strings.Repeat("ab", 32), DiskDigest: "sha256:" + strings.Repeat("ef", 32),
		RepoTags: []string{"debian:12"}, Format: "qcow2", Size: 300 << 20, VirtualSize: 2 << 30,
	}
	// ImageAlpine is an HTTP-style image (ID = disk digest), raw.
	ImageAlpine = image.Image{
		ID: "sha256:" + strings.Repeat("cd", 32), RepoTags: []string{"alpine:3"},
		Format: "raw", Size: 100 << 20, VirtualSize: 1 << 30,
	}
)

// Images is a fake image store holding fixed images; it implements
// lifecycle.Images and the CRI layer's image store.
type Images struct {
	// Dir is where Path puts disk files.
	Dir    string
	Images []image.Image

	mu       sync.Mutex
	released []string
}

// Get finds an image by ID or tag.
func (s *Images) Get(ref string) (image.Image, error) {
	for _, img := range s.Images {
		if img.ID == ref || slices.Contains(img.RepoTags, ref) {
			return img, nil
		}
	}
	return image.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

// Pull "pulls" an image it holds.
func (s *Images) Pull(ctx context.Context, name string, _ *oci.Auth) (image.Image, error) {
	return s.Get(name)
}

// List returns the images.
func (s *Images) List() []image.Image { return s.Images }

// Remove does nothing.
func (s *Images) Remove(ref string) error { return nil }

// Usage reports nothing.
func (s *Images) Usage() (image.FsUsage, error) { return image.FsUsage{}, nil }

// Path returns the disk file of image id, or of disk digest id.
func (s *Images) Path(id string) string {
	if img, err := s.Get(id); err == nil && img.ID == id {
		id = img.Disk()
	}
	return filepath.Join(s.Dir, strings.TrimPrefix(id, "sha256:"))
}

// Release records a released disk.
func (s *Images) Release(id string) {
	s.mu.Lock()
	s.released = append(s.released, id)
	s.mu.Unlock()
}

// ReleasedIDs are the disks released so far.
func (s *Images) ReleasedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

// OverlayCall is one OverlayMaker.Create call.
type OverlayCall struct {
	Path, Backing, Format string
	Size                  int64
}

// Overlays is a fake OverlayMaker: it writes an empty file at path. While
// held, Create waits until released.
type Overlays struct {
	mu      sync.Mutex
	calls   []OverlayCall
	hold    chan struct{}
	entered chan struct{} // gets a value when a held Create starts waiting
}

// Create implements lifecycle.OverlayMaker.
func (o *Overlays) Create(ctx context.Context, path, backing, format string, size int64) error {
	o.mu.Lock()
	o.calls = append(o.calls, OverlayCall{path, backing, format, size})
	hold, entered := o.hold, o.entered
	o.mu.Unlock()
	if hold != nil {
		entered <- struct{}{}
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return os.WriteFile(path, nil, 0o644)
}

// Adopt implements lifecycle.OverlayMaker: it records the call (size -1)
// and checks that path exists.
func (o *Overlays) Adopt(ctx context.Context, path, backing, format string) error {
	o.mu.Lock()
	o.calls = append(o.calls, OverlayCall{path, backing, format, -1})
	o.mu.Unlock()
	_, err := os.Stat(path)
	return err
}

// HoldCreates makes the next Creates wait; entered receives once each one
// is waiting, and release lets them (and later ones) finish.
func (o *Overlays) HoldCreates() (entered <-chan struct{}, release func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	hold, ent := make(chan struct{}), make(chan struct{}, 8)
	o.hold, o.entered = hold, ent
	var once sync.Once
	return ent, func() {
		once.Do(func() {
			o.mu.Lock()
			o.hold = nil
			o.mu.Unlock()
			close(hold)
		})
	}
}

// Made are the Create calls so far.
func (o *Overlays) Made() []OverlayCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

// Console is a fake console reader. Output fed with Feed reaches every
// subscriber; input is recorded.
type Console struct {
	// Socket and LogPath are what it was started with, Spec all of it.
	Socket, LogPath string
	Spec            lifecycle.ConsoleSpec

	mu        sync.Mutex
	subs      []*io.PipeWriter
	input     []byte
	reopens   int
	closed    bool
	done      chan struct{}
	connected chan struct{}
	outEnded  chan struct{}
}

func newConsole(spec lifecycle.ConsoleSpec) *Console {
	c := &Console{Socket: spec.Socket, LogPath: spec.LogPath, Spec: spec,
		done: make(chan struct{}), connected: make(chan struct{}), outEnded: make(chan struct{})}
	close(c.connected)
	if spec.Stdout == "" {
		close(c.outEnded)
	}
	return c
}

// OutputEnded is closed by EndOutput (at once without output streams).
func (c *Console) OutputEnded() <-chan struct{} { return c.outEnded }

// EndOutput ends the command's output streams, as the wrapper's end lines
// do.
func (c *Console) EndOutput() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.outEnded:
	default:
		close(c.outEnded)
	}
}

// Subscribe adds a reader of the output.
func (c *Console) Subscribe() (io.ReadCloser, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("console closed: %w", errdefs.ErrFailedPrecondition)
	}
	r, w := io.Pipe()
	c.subs = append(c.subs, w)
	return r, nil
}

// Write records input to the guest.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.input = append(c.input, p...)
	return len(p), nil
}

// ReopenLog counts reopens.
func (c *Console) ReopenLog() error {
	c.mu.Lock()
	c.reopens++
	c.mu.Unlock()
	return nil
}

// Close ends every subscriber.
func (c *Console) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	for _, w := range c.subs {
		w.Close()
	}
	return nil
}

// Done is closed by Close.
func (c *Console) Done() <-chan struct{} { return c.done }

// Connected is closed from the start.
func (c *Console) Connected() <-chan struct{} { return c.connected }

// Feed writes guest output to the current subscribers; each must be read.
func (c *Console) Feed(s string) {
	c.mu.Lock()
	subs := slices.Clone(c.subs)
	c.mu.Unlock()
	for _, w := range subs {
		w.Write([]byte(s))
	}
}

// IsClosed reports whether Close was called.
func (c *Console) IsClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Written is the input so far.
func (c *Console) Written() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.input)
}

// Subscribers counts the subscribers so far (ended ones included).
func (c *Console) Subscribers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

// Reopens counts ReopenLog calls.
func (c *Console) Reopens() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reopens
}

// Consoles is the fake console factory; it keeps every console made.
type Consoles struct {
	mu      sync.Mutex
	made    []*Console
	failErr error // returned once by the next New
}

// New is the lifecycle.ConsoleFactory.
func (f *Consoles) New(spec lifecycle.ConsoleSpec, _ *slog.Logger) (lifecycle.ConsoleHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failErr; err != nil {
		f.failErr = nil
		return nil, err
	}
	c := newConsole(spec)
	f.made = append(f.made, c)
	return c, nil
}

// FailNext makes the next New fail with err.
func (f *Consoles) FailNext(err error) {
	f.mu.Lock()
	f.failErr = err
	f.mu.Unlock()
}

// All are the consoles made so far.
func (f *Consoles) All() []*Console {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.made)
}

// Last is the last console made.
func (f *Consoles) Last(t testing.TB) *Console {
	t.Helper()
	all := f.All()
	if len(all) == 0 {
		t.Fatal("no console was created")
	}
	return all[len(all)-1]
}

// Clock is a settable clock. While held, Now blocks until released.
type Clock struct {
	mu   sync.Mutex
	now  time.Time
	hold chan struct{}
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the time, waiting while held.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	hold := c.hold
	c.mu.Unlock()
	if hold != nil {
		<-hold
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set sets the time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// HoldNow makes Now wait until release is called.
func (c *Clock) HoldNow() (release func()) {
	hold := make(chan struct{})
	c.mu.Lock()
	c.hold = hold
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.hold = nil
			c.mu.Unlock()
			close(hold)
		})
	}
}
