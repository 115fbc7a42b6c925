package cri

import (
	"context"
	"errors"
	"flag"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/libvirttools/fake"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// Lifecycle tests drive the sandbox and container RPCs of a Service built
// over a real metadata store and hand-written fakes: the stateful libvirt
// fake, an image store, an overlay maker and a console factory. Errors are
// checked through toGRPC, the mapping the gRPC boundary applies.

// The -update flag rewrites the golden files under testdata/ instead of
// comparing with them; registered only if another test file of this package
// has not registered it already.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/ instead of comparing")
	}
}

func lcUpdateGolden() bool {
	g, ok := flag.Lookup("update").Value.(flag.Getter)
	if !ok {
		return false
	}
	v, _ := g.Get().(bool)
	return v
}

// Images the fake image store holds.
var (
	// An OCI-style image: its ID is not the digest of its disk file.
	lcImageDebian = image.Image{
		ID: "sha256:" + strings.Repeat("ab", 32), DiskDigest: "sha256:" + strings.Repeat("ef", 32),
		RepoTags: []string{"debian:12"}, Format: "qcow2", Size: 300 << 20, VirtualSize: 2 << 30,
	}
	lcImageAlpine = image.Image{
		ID: "sha256:" + strings.Repeat("cd", 32), RepoTags: []string{"alpine:3"},
		Format: "raw", Size: 100 << 20, VirtualSize: 1 << 30,
	}
)

// lcImages is a fake ImageStore holding fixed images.
type lcImages struct {
	dir    string
	images []image.Image

	mu       sync.Mutex
	released []string
}

func (s *lcImages) Get(ref string) (image.Image, error) {
	for _, img := range s.images {
		if img.ID == ref || slices.Contains(img.RepoTags, ref) {
			return img, nil
		}
	}
	return image.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

func (s *lcImages) Pull(ctx context.Context, name string, _ *oci.Auth) (image.Image, error) {
	return s.Get(name)
}
func (s *lcImages) List() []image.Image           { return s.images }
func (s *lcImages) Remove(ref string) error       { return nil }
func (s *lcImages) Usage() (image.FsUsage, error) { return image.FsUsage{}, nil }

// Path returns the disk file of image id, or of disk digest id.
func (s *lcImages) Path(id string) string {
	if img, err := s.Get(id); err == nil && img.ID == id {
		id = img.Disk()
	}
	return filepath.Join(s.dir, strings.TrimPrefix(id, "sha256:"))
}

func (s *lcImages) Release(id string) {
	s.mu.Lock()
	s.released = append(s.released, id)
	s.mu.Unlock()
}

func (s *lcImages) releasedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

// overlayCall is one OverlayMaker.Create call.
type overlayCall struct {
	path, backing, format string
	size                  int64
}

// lcOverlays is a fake OverlayMaker: it writes an empty file at path. While
// held, Create waits until released.
type lcOverlays struct {
	mu      sync.Mutex
	calls   []overlayCall
	hold    chan struct{}
	entered chan struct{} // gets a value when a held Create starts waiting
}

func (o *lcOverlays) Create(ctx context.Context, path, backing, format string, size int64) error {
	o.mu.Lock()
	o.calls = append(o.calls, overlayCall{path, backing, format, size})
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

// holdCreates makes the next Creates wait; entered receives once each one
// is waiting, and release lets them (and later ones) finish.
func (o *lcOverlays) holdCreates() (entered <-chan struct{}, release func()) {
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

func (o *lcOverlays) made() []overlayCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

// lcConsole is a fake ConsoleHandle. Output fed with feed reaches every
// subscriber; input is recorded.
type lcConsole struct {
	socket, logPath string

	mu        sync.Mutex
	subs      []*io.PipeWriter
	input     []byte
	reopens   int
	closed    bool
	done      chan struct{}
	connected chan struct{}
}

func newLCConsole(socket, logPath string) *lcConsole {
	c := &lcConsole{socket: socket, logPath: logPath, done: make(chan struct{}), connected: make(chan struct{})}
	close(c.connected)
	return c
}

func (c *lcConsole) Subscribe() (io.ReadCloser, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("console closed: %w", errdefs.ErrFailedPrecondition)
	}
	r, w := io.Pipe()
	c.subs = append(c.subs, w)
	return r, nil
}

func (c *lcConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.input = append(c.input, p...)
	return len(p), nil
}

func (c *lcConsole) ReopenLog() error {
	c.mu.Lock()
	c.reopens++
	c.mu.Unlock()
	return nil
}

func (c *lcConsole) Close() error {
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

func (c *lcConsole) Done() <-chan struct{}      { return c.done }
func (c *lcConsole) Connected() <-chan struct{} { return c.connected }

// feed writes guest output to the current subscribers; each must be read.
func (c *lcConsole) feed(s string) {
	c.mu.Lock()
	subs := slices.Clone(c.subs)
	c.mu.Unlock()
	for _, w := range subs {
		w.Write([]byte(s))
	}
}

func (c *lcConsole) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *lcConsole) written() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.input)
}

// lcConsoles is the fake ConsoleFactory; it keeps every console made.
type lcConsoles struct {
	mu      sync.Mutex
	made    []*lcConsole
	failErr error // returned once by the next New
}

func (f *lcConsoles) New(socket, logPath string, _ *slog.Logger) (ConsoleHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failErr; err != nil {
		f.failErr = nil
		return nil, err
	}
	c := newLCConsole(socket, logPath)
	f.made = append(f.made, c)
	return c, nil
}

func (f *lcConsoles) all() []*lcConsole {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.made)
}

func (f *lcConsoles) last(t *testing.T) *lcConsole {
	t.Helper()
	all := f.all()
	if len(all) == 0 {
		t.Fatal("no console was created")
	}
	return all[len(all)-1]
}

// lcClock is a settable clock. While held, Now blocks until released.
type lcClock struct {
	mu   sync.Mutex
	now  time.Time
	hold chan struct{}
}

func (c *lcClock) Now() time.Time {
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

func (c *lcClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *lcClock) holdNow() (release func()) {
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

var lcT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// lcEnv is a Service with its dependencies.
type lcEnv struct {
	cfg      config.Config
	runRoot  string // dir of the CRI socket; per-VM sockets go under vms/
	stateDir string
	metaPath string
	meta     *store.Store
	lv       *fake.Connection
	images   *lcImages
	overlays *lcOverlays
	consoles *lcConsoles
	clock    *lcClock
	net      *fakeNet
	svc      *Service
}

func newLCEnv(t *testing.T) *lcEnv {
	t.Helper()
	// Short, so the serial socket stays under the 107-byte limit.
	runRoot, err := os.MkdirTemp("", "vp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runRoot) })
	stateDir := t.TempDir()
	cfg := config.Default()
	cfg.Socket = filepath.Join(runRoot, "s.sock")
	cfg.StateDir = stateDir
	cfg.Accelerator = "tcg"
	cfg.Runtimes = map[string]config.Runtime{"vmpod": {}, "small": {TCGTBCacheMiB: 256}}
	e := &lcEnv{
		cfg: cfg, runRoot: runRoot, stateDir: stateDir, metaPath: filepath.Join(stateDir, "metadata.db"),
		lv:       fake.New(),
		images:   &lcImages{dir: t.TempDir(), images: []image.Image{lcImageDebian, lcImageAlpine}},
		overlays: &lcOverlays{}, consoles: &lcConsoles{}, clock: &lcClock{now: lcT0}, net: newFakeNet(),
	}
	e.openStore(t)
	t.Cleanup(func() { e.meta.Close() })
	e.svc = e.newService()
	return e
}

func (e *lcEnv) openStore(t *testing.T) {
	t.Helper()
	meta, err := store.Open(e.metaPath)
	if err != nil {
		t.Fatal(err)
	}
	e.meta = meta
}

func (e *lcEnv) newService() *Service {
	return NewService(Options{
		Config: e.cfg, Images: e.images, Libvirt: e.lv, Meta: e.meta, Log: quietLog(),
		NewConsole: e.consoles.New, Overlays: e.overlays, Now: e.clock.Now, Network: e.net,
	})
}

// restart simulates vmpod being killed and started again: the old Service
// is abandoned as is (consoles not closed), the metadata store reopened,
// and a new Service built over it and the same libvirt. Recover is the
// caller's.
func (e *lcEnv) restart(t *testing.T) *Service {
	t.Helper()
	if err := e.meta.Close(); err != nil {
		t.Fatal(err)
	}
	e.openStore(t)
	e.svc = e.newService()
	return e.svc
}

func lcPod(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		LogDirectory: "/var/log/pods/default_" + name + "_uid-" + name,
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{},
	}
}

func lcContainer(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "debian:12"},
		LogPath:  name + "/0.log",
		Labels:   map[string]string{"container": name},
	}
}

func (e *lcEnv) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	return resp.PodSandboxId
}

func (e *lcEnv) create(sbID string, sb *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig) (string, error) {
	resp, err := e.svc.CreateContainer(lcQuiet(context.Background()),
		&runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: c, SandboxConfig: sb})
	return resp.GetContainerId(), err
}

func (e *lcEnv) mustCreate(t *testing.T, sbID string, sb *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig) string {
	t.Helper()
	id, err := e.create(sbID, sb, c)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	return id
}

func (e *lcEnv) mustStart(t *testing.T, id string) {
	t.Helper()
	if _, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

// runningVM runs pod name and a started container "vm" in it.
func (e *lcEnv) runningVM(t *testing.T, name string) (sbID, id string) {
	t.Helper()
	pod := lcPod(name)
	sbID = e.runPod(t, pod)
	id = e.mustCreate(t, sbID, pod, lcContainer("vm"))
	e.mustStart(t, id)
	return sbID, id
}

func (e *lcEnv) status(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := e.svc.ContainerStatus(lcCtx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus(%s): %v", id, err)
	}
	return resp.Status
}

func (e *lcEnv) podState(t *testing.T, id string) runtimeapi.PodSandboxState {
	t.Helper()
	resp, err := e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("PodSandboxStatus(%s): %v", id, err)
	}
	return resp.Status.State
}

func (e *lcEnv) record(t *testing.T, id string) containerRecord {
	t.Helper()
	var rec containerRecord
	if err := e.meta.Get(store.Containers, id, &rec); err != nil {
		t.Fatalf("container record %s: %v", id, err)
	}
	return rec
}

func (e *lcEnv) containerRecords(t *testing.T) []containerRecord {
	t.Helper()
	recs, err := store.List[containerRecord](e.meta, store.Containers)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func (e *lcEnv) sandboxRecords(t *testing.T) []sandboxRecord {
	t.Helper()
	recs, err := store.List[sandboxRecord](e.meta, store.Sandboxes)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// domains lists the fake's domain names (this records a List call).
func (e *lcEnv) domains(t *testing.T) []string {
	t.Helper()
	doms, err := e.lv.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range doms {
		names = append(names, d.Name)
	}
	return names
}

func (e *lcEnv) domainState(t *testing.T, name string) libvirttools.DomainStatus {
	t.Helper()
	_, st, ok := e.lv.Domain(name)
	if !ok {
		t.Fatalf("domain %s is not defined", name)
	}
	return st
}

func (e *lcEnv) domainXML(t *testing.T, name string) *libvirtxml.Domain {
	t.Helper()
	doc, _, ok := e.lv.Domain(name)
	if !ok {
		t.Fatalf("domain %s is not defined", name)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		t.Fatalf("domain %s XML: %v", name, err)
	}
	return &dom
}

// callsSince returns the fake's calls from index n on.
func (e *lcEnv) callsSince(n int) []string { return e.lv.Calls()[n:] }

func (e *lcEnv) listContainers(t *testing.T, f *runtimeapi.ContainerFilter) []string {
	t.Helper()
	resp, err := e.svc.ListContainers(lcCtx(t), &runtimeapi.ListContainersRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range resp.Containers {
		ids = append(ids, c.Id)
	}
	return ids
}

func (e *lcEnv) listPods(t *testing.T, f *runtimeapi.PodSandboxFilter) []string {
	t.Helper()
	resp, err := e.svc.ListPodSandbox(lcCtx(t), &runtimeapi.ListPodSandboxRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range resp.Items {
		ids = append(ids, p.Id)
	}
	return ids
}

// dirEntries lists dir; a missing dir is empty.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertNoContainers checks that no container is left anywhere: no
// record, no state entry, no domain, no container or socket directory.
func (e *lcEnv) assertNoContainers(t *testing.T) {
	t.Helper()
	if recs := e.containerRecords(t); len(recs) != 0 {
		t.Errorf("container records left: %+v", recs)
	}
	if cs := e.svc.state.listContainers(); len(cs) != 0 {
		t.Errorf("%d containers left in memory", len(cs))
	}
	if doms := e.domains(t); len(doms) != 0 {
		t.Errorf("domains left: %v", doms)
	}
	if d := dirEntries(t, e.svc.containersDir()); len(d) != 0 {
		t.Errorf("container directories left: %v", d)
	}
	if d := dirEntries(t, e.svc.runDir()); len(d) != 0 {
		t.Errorf("socket directories left: %v", d)
	}
	for _, c := range e.overlays.made() {
		if _, err := os.Stat(c.path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("overlay %s left (stat: %v)", c.path, err)
		}
	}
}

// lcQuiet gives ctx a logger that discards: the RPCs log through the
// context's logger (the interceptor puts one there), else slog.Default.
func lcQuiet(ctx context.Context) context.Context { return logging.With(ctx, quietLog()) }

// lcCtx is the test's context with a quiet logger.
func lcCtx(t *testing.T) context.Context { return lcQuiet(t.Context()) }

// wantCode checks the gRPC code err maps to at the boundary and that its
// message contains each of the words.
func wantCode(t *testing.T, err error, code codes.Code, words ...string) {
	t.Helper()
	if got := status.Code(toGRPC(err)); got != code {
		t.Fatalf("error %v maps to %v, want %v", err, got, code)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestRunPodSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	id := e.runPod(t, pod)
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("sandbox ID %q is not 64 hex digits", id)
	}
	resp, err := e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Status
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Metadata.GetName() != "web" ||
		st.CreatedAt != lcT0.UnixNano() || st.RuntimeHandler != "vmpod" || st.Labels["app"] != "web" {
		t.Errorf("PodSandboxStatus = %+v", st)
	}
	recs := e.sandboxRecords(t)
	if len(recs) != 1 || recs[0].ID != id || recs[0].Name != "web_default_uid-web_0" || recs[0].State != sandboxReady {
		t.Errorf("sandbox records = %+v", recs)
	}
	if calls := e.lv.Calls(); len(calls) != 0 {
		t.Errorf("RunPodSandbox called libvirt: %v", calls)
	}

	t.Run("same name twice", func(t *testing.T) {
		_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		wantCode(t, err, codes.AlreadyExists, "web_default_uid-web_0")
	})
	t.Run("next attempt", func(t *testing.T) {
		next := lcPod("web")
		next.Metadata.Attempt = 1
		if id2 := e.runPod(t, next); id2 == id {
			t.Errorf("attempt 1 got the ID of attempt 0")
		}
	})
}

func TestRunPodSandboxInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*runtimeapi.RunPodSandboxRequest)
		code    codes.Code
		mention []string
	}{
		{"no config", func(r *runtimeapi.RunPodSandboxRequest) { r.Config = nil }, codes.InvalidArgument, []string{"metadata"}},
		{"no metadata", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata = nil }, codes.InvalidArgument, []string{"metadata"}},
		{"no name", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Name = "" }, codes.InvalidArgument, []string{"name"}},
		{"no namespace", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Namespace = "" }, codes.InvalidArgument, []string{"namespace"}},
		{"no uid", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Uid = "" }, codes.InvalidArgument, []string{"uid"}},
		{"host network", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		}, codes.InvalidArgument, []string{"hostNetwork"}},
		{"unknown handler", func(r *runtimeapi.RunPodSandboxRequest) { r.RuntimeHandler = "kata" }, codes.InvalidArgument,
			[]string{`"kata"`, "known: small, vmpod"}},
		{"vcpus zero", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annVCPUs] = "0" }, codes.InvalidArgument, []string{annVCPUs}},
		{"vcpus not a number", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annVCPUs] = "two" }, codes.InvalidArgument, []string{annVCPUs}},
		{"vcpus too many", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annVCPUs] = "65" }, codes.InvalidArgument, []string{annVCPUs, "1 to 64"}},
		{"memory too small", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annMemory] = "32Mi" }, codes.InvalidArgument, []string{annMemory, "64Mi"}},
		{"memory garbage", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annMemory] = "lots" }, codes.InvalidArgument, []string{annMemory}},
		{"root volume zero", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annRootVolumeSize] = "0" }, codes.InvalidArgument, []string{annRootVolumeSize}},
		{"disk bus", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annDiskBus] = "ide" }, codes.InvalidArgument, []string{annDiskBus, "virtio, scsi or sata"}},
		{"firmware", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annFirmware] = "coreboot" }, codes.InvalidArgument, []string{annFirmware, "bios or uefi"}},
		{"cpu model", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[annCPUModel] = "bad model;" }, codes.InvalidArgument, []string{annCPUModel}},
		{"two bad annotations", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Annotations[annDiskBus] = "ide"
			r.Config.Annotations[annFirmware] = "coreboot"
		}, codes.InvalidArgument, []string{annDiskBus, annFirmware}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			req := &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")}
			tc.mod(req)
			resp, err := e.svc.RunPodSandbox(lcCtx(t), req)
			if err == nil {
				t.Fatalf("RunPodSandbox succeeded: %v", resp)
			}
			wantCode(t, err, tc.code, tc.mention...)
			if ids := e.listPods(t, nil); len(ids) != 0 {
				t.Errorf("ListPodSandbox after a refused run = %v", ids)
			}
			if recs := e.sandboxRecords(t); len(recs) != 0 {
				t.Errorf("sandbox records after a refused run: %+v", recs)
			}
			// The name was not kept: the same pod, fixed, runs.
			e.runPod(t, lcPod("web"))
		})
	}
}

// TestCreateOutlastsDeadline: when the caller's deadline passes while the
// sandbox or VM is being built, the call fails with DeadlineExceeded but
// the work goes on, and the retry with the same name gets the same object
// instead of a second one.
func TestCreateOutlastsDeadline(t *testing.T) {
	t.Run("RunPodSandbox", func(t *testing.T) {
		e := newLCEnv(t)
		release := e.clock.holdNow() // runPodSandbox reads the clock for CreatedAt
		defer release()
		ctx, cancel := context.WithTimeout(lcCtx(t), 50*time.Millisecond)
		defer cancel()
		_, err := e.svc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		wantCode(t, err, codes.DeadlineExceeded)
		release()
		resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if ids := e.listPods(t, nil); len(ids) != 1 || ids[0] != resp.PodSandboxId {
			t.Fatalf("retry got %s; sandboxes are %v", resp.PodSandboxId, ids)
		}
	})

	for _, retryWhileBuilding := range []bool{false, true} {
		t.Run(fmt.Sprintf("CreateContainer/retry while building=%v", retryWhileBuilding), func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			sbID := e.runPod(t, pod)
			entered, release := e.overlays.holdCreates()
			defer release()
			req := &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: lcContainer("vm"), SandboxConfig: pod}
			ctx, cancel := context.WithTimeout(lcCtx(t), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := e.svc.CreateContainer(ctx, req)
			wantCode(t, err, codes.DeadlineExceeded)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("CreateContainer returned %v after its deadline", d)
			}
			<-entered
			if ids := e.listContainers(t, nil); len(ids) != 0 {
				t.Errorf("ListContainers shows a container still being created: %v", ids)
			}

			type result struct {
				id  string
				err error
			}
			retry := make(chan result, 1)
			doRetry := func() {
				resp, err := e.svc.CreateContainer(lcQuiet(context.Background()), req)
				retry <- result{resp.GetContainerId(), err}
			}
			if retryWhileBuilding {
				go doRetry()
				select {
				case r := <-retry:
					t.Fatalf("retry returned %+v while the first create was still building", r)
				case <-time.After(50 * time.Millisecond):
				}
				release()
			} else {
				release()
				doRetry()
			}
			r := <-retry
			if r.err != nil {
				t.Fatalf("retry: %v", r.err)
			}
			recs := e.containerRecords(t)
			if len(recs) != 1 || recs[0].ID != r.id || recs[0].State != containerCreated {
				t.Fatalf("retry got %s; records are %+v", r.id, recs)
			}
			if doms := e.domains(t); len(doms) != 1 || doms[0] != domainName(r.id) {
				t.Errorf("domains = %v, want just %s", doms, domainName(r.id))
			}
			if n := len(e.overlays.made()); n != 1 {
				t.Errorf("%d overlays made, want 1", n)
			}
		})
	}
}

// TestCreateContainerDomainGolden compares the defined domain with golden
// files; temp dirs and IDs are replaced by placeholders.
func TestCreateContainerDomainGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		res  *runtimeapi.LinuxContainerResources
	}{
		{"default", nil, nil},
		{"annotated-uefi", map[string]string{
			annVCPUs: "2", annMemory: "1Gi", annDiskBus: "scsi", annFirmware: "uefi", annCPUModel: "Skylake-Client",
		}, &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 150000, CpuPeriod: 100000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.ann {
				pod.Annotations[k] = v
			}
			sbID := e.runPod(t, pod)
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.res}
			id := e.mustCreate(t, sbID, pod, c)
			if doms := e.domains(t); len(doms) != 1 || doms[0] != "vmpod-"+id {
				t.Fatalf("domains = %v, want just vmpod-%s", doms, id)
			}
			doc, _, _ := e.lv.Domain("vmpod-" + id)
			got := strings.NewReplacer(
				e.runRoot, "@RUN@", e.stateDir, "@STATE@",
				id, "@CONTAINER_ID@", id[:16], "@CONTAINER_ID_16@",
				sbID, "@SANDBOX_ID@", sbID[:10], "@SANDBOX_ID_10@", domainUUID(id), "@UUID@", e.svc.state.meta.InstanceID(), "@INSTANCE@",
			).Replace(doc) + "\n"
			path := filepath.Join("testdata", "domain-"+tc.name+".xml")
			if lcUpdateGolden() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the defined domain (rerun with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

// lcDomainShape is what the VM-shaping inputs change in a domain.
type lcDomainShape struct {
	VCPUs      uint
	MemoryKiB  uint
	Bus        string
	Machine    string
	Loader     string
	CPU        string // model name, or mode when there is no model
	Shares     uint
	Period     uint64
	Quota      int64
	TBCacheMiB uint
}

func domainShape(dom *libvirtxml.Domain) lcDomainShape {
	s := lcDomainShape{VCPUs: dom.VCPU.Value, MemoryKiB: dom.Memory.Value, Machine: dom.OS.Type.Machine}
	if dom.Memory.Unit != "KiB" {
		s.MemoryKiB = 0
	}
	if len(dom.Devices.Disks) > 0 && dom.Devices.Disks[0].Target != nil {
		s.Bus = dom.Devices.Disks[0].Target.Bus
	}
	if dom.OS.Loader != nil {
		s.Loader = dom.OS.Loader.Path
	}
	if cpu := dom.CPU; cpu != nil {
		s.CPU = cpu.Mode
		if cpu.Model != nil {
			s.CPU = cpu.Model.Value
		}
	}
	if ct := dom.CPUTune; ct != nil {
		if ct.Shares != nil {
			s.Shares = ct.Shares.Value
		}
		if ct.GlobalPeriod != nil {
			s.Period = ct.GlobalPeriod.Value
		}
		if ct.GlobalQuota != nil {
			s.Quota = ct.GlobalQuota.Value
		}
	}
	if f := dom.Features; f != nil && f.TCG != nil && f.TCG.TBCache != nil {
		s.TBCacheMiB = f.TCG.TBCache.Size
	}
	return s
}

// TestCreateContainerShapesVM checks that annotations, resources and the
// runtime handler show up in the defined domain.
func TestCreateContainerShapesVM(t *testing.T) {
	base := lcDomainShape{VCPUs: 1, MemoryKiB: 512 << 10, Bus: "virtio", Machine: "pc", TBCacheMiB: 1024}
	with := func(f func(*lcDomainShape)) lcDomainShape { s := base; f(&s); return s }
	for _, tc := range []struct {
		name     string
		handler  string
		podAnn   map[string]string
		cAnn     map[string]string
		res      *runtimeapi.LinuxContainerResources
		want     lcDomainShape
		wantSize int64 // overlay virtual size
	}{
		{name: "defaults", want: base},
		{name: "pod annotations", podAnn: map[string]string{
			annVCPUs: "3", annMemory: "1Gi", annDiskBus: "sata", annFirmware: "uefi", annCPUModel: "Skylake-Client",
		}, want: with(func(s *lcDomainShape) {
			s.VCPUs, s.MemoryKiB, s.Bus, s.Machine, s.Loader, s.CPU = 3, 1<<20, "sata", "q35", "/usr/share/OVMF/OVMF_CODE_4M.fd", "Skylake-Client"
		})},
		{name: "scsi and host-model", podAnn: map[string]string{annDiskBus: "scsi", annCPUModel: "host-model"},
			want: with(func(s *lcDomainShape) { s.Bus, s.CPU = "scsi", "host-model" })},
		{name: "container annotation wins", podAnn: map[string]string{annVCPUs: "2", annMemory: "1Gi"},
			cAnn: map[string]string{annVCPUs: "4"},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.MemoryKiB = 4, 1<<20 })},
		{name: "cpu limit 1.5 rounds up", res: &runtimeapi.LinuxContainerResources{CpuQuota: 150000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 2, 150000, 100000 })},
		{name: "cpu limit 2", res: &runtimeapi.LinuxContainerResources{CpuQuota: 200000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 2, 200000, 100000 })},
		{name: "cpu limit 0.25", res: &runtimeapi.LinuxContainerResources{CpuQuota: 25000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 1, 25000, 100000 })},
		{name: "cpu shares", res: &runtimeapi.LinuxContainerResources{CpuShares: 256},
			want: with(func(s *lcDomainShape) { s.Shares = 256 })},
		{name: "memory limit", res: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 768 << 20},
			want: with(func(s *lcDomainShape) { s.MemoryKiB = 768 << 10 })},
		{name: "annotations beat resources", podAnn: map[string]string{annVCPUs: "1", annMemory: "2Gi"},
			res:  &runtimeapi.LinuxContainerResources{CpuQuota: 300000, CpuPeriod: 100000, MemoryLimitInBytes: 768 << 20},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.MemoryKiB, s.Quota, s.Period = 1, 2<<20, 300000, 100000 })},
		{name: "handler tb cache", handler: "small", want: with(func(s *lcDomainShape) { s.TBCacheMiB = 256 })},
		{name: "root volume grows the disk", podAnn: map[string]string{annRootVolumeSize: "4Gi"}, want: base, wantSize: 4 << 30},
		{name: "root volume equal to the image", podAnn: map[string]string{annRootVolumeSize: "2Gi"}, want: base, wantSize: 2 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.podAnn {
				pod.Annotations[k] = v
			}
			resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: tc.handler})
			if err != nil {
				t.Fatal(err)
			}
			c := lcContainer("vm")
			c.Annotations = tc.cAnn
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.res}
			id := e.mustCreate(t, resp.PodSandboxId, pod, c)
			if got := domainShape(e.domainXML(t, domainName(id))); got != tc.want {
				t.Errorf("domain shape\n got %+v\nwant %+v", got, tc.want)
			}
			rec := e.record(t, id)
			want := overlayCall{path: rec.RootDisk, backing: filepath.Join(e.images.dir, strings.Repeat("ef", 32)), format: "qcow2", size: tc.wantSize}
			if made := e.overlays.made(); len(made) != 1 || made[0] != want {
				t.Errorf("overlays = %+v, want %+v", made, want)
			}
			if rec.RootDisk != filepath.Join(e.stateDir, "containers", id, "root.qcow2") {
				t.Errorf("root disk at %s", rec.RootDisk)
			}
		})
	}
}

func TestCreateContainerRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		podAnn  map[string]string
		mod     func(*runtimeapi.ContainerConfig)
		code    codes.Code
		mention []string
	}{
		{name: "root volume smaller than the image", podAnn: map[string]string{annRootVolumeSize: "1Gi"},
			code: codes.InvalidArgument, mention: []string{annRootVolumeSize, "virtual size"}},
		{name: "bad container annotation", mod: func(c *runtimeapi.ContainerConfig) { c.Annotations = map[string]string{annFirmware: "efi"} },
			code: codes.InvalidArgument, mention: []string{annFirmware}},
		{name: "image not pulled", mod: func(c *runtimeapi.ContainerConfig) { c.Image.Image = "ubuntu:24.04" },
			code: codes.NotFound, mention: []string{"ubuntu:24.04", "pull it first"}},
		{name: "no image", mod: func(c *runtimeapi.ContainerConfig) { c.Image = nil }, code: codes.InvalidArgument},
		{name: "no name", mod: func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, code: codes.InvalidArgument},
		{name: "memory limit below 64Mi", mod: func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
		}, code: codes.InvalidArgument, mention: []string{"64Mi"}},
		{name: "host-passthrough under TCG", podAnn: map[string]string{annCPUModel: "host-passthrough"},
			code: codes.InvalidArgument, mention: []string{"KVM"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.podAnn {
				pod.Annotations[k] = v
			}
			sbID := e.runPod(t, pod)
			c := lcContainer("vm")
			if tc.mod != nil {
				tc.mod(c)
			}
			_, err := e.create(sbID, pod, c)
			wantCode(t, err, tc.code, tc.mention...)
			e.assertNoContainers(t)
			if made := e.overlays.made(); len(made) != 0 {
				t.Errorf("overlays made: %+v", made)
			}
			// The name is free: the fixed container is created.
			e.mustCreate(t, sbID, lcPod("web"), lcContainer("vm"))
		})
	}
	t.Run("unknown sandbox", func(t *testing.T) {
		e := newLCEnv(t)
		_, err := e.create(strings.Repeat("0", 64), lcPod("web"), lcContainer("vm"))
		wantCode(t, err, codes.NotFound)
	})
}

// TestCreateContainerRollback: a failure after the record was stored
// undoes everything, and the name can be used again.
func TestCreateContainerRollback(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	e.lv.FailNext("Define", fmt.Errorf("injected: %w", errdefs.ErrInternal))
	_, err := e.create(sbID, pod, lcContainer("vm"))
	wantCode(t, err, codes.Internal, "injected")
	if len(e.overlays.made()) != 1 {
		t.Fatalf("overlays = %+v; the failure should come after the overlay", e.overlays.made())
	}
	e.assertNoContainers(t)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if doms := e.domains(t); len(doms) != 1 || doms[0] != domainName(id) {
		t.Errorf("domains after the retry = %v", doms)
	}
}

// TestOneVMPerSandbox: a sandbox runs one VM at a time; after it exited,
// the kubelet's next attempt gets a fresh root disk.
func TestOneVMPerSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	first := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	next := lcContainer("vm")
	next.Metadata.Attempt = 1

	_, err := e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, first, "CREATED")
	e.mustStart(t, first)
	_, err = e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, first, "RUNNING")
	_, err = e.create(sbID, pod, lcContainer("sidecar"))
	wantCode(t, err, codes.FailedPrecondition)

	e.lv.GuestPowerOff(domainName(first))
	if st := e.status(t, first); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("first container is %v after power-off", st.State)
	}
	second := e.mustCreate(t, sbID, pod, next)
	if second == first {
		t.Fatal("the restart got the exited container's ID")
	}
	a, b := e.record(t, first), e.record(t, second)
	if a.RootDisk == b.RootDisk || a.RunDir == b.RunDir {
		t.Errorf("restart reuses the root disk or socket dir: %s %s / %s %s", a.RootDisk, b.RootDisk, a.RunDir, b.RunDir)
	}
	if made := e.overlays.made(); len(made) != 2 || made[1].path != b.RootDisk {
		t.Errorf("overlays = %+v", made)
	}
	e.mustStart(t, second)
	if got := e.listContainers(t, &runtimeapi.ContainerFilter{PodSandboxId: sbID}); len(got) != 2 {
		t.Errorf("containers of the sandbox = %v", got)
	}
}

func TestStartContainer(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.CreatedAt != lcT0.UnixNano() || st.StartedAt != 0 {
		t.Fatalf("status before start = %+v", st)
	}
	n := len(e.lv.Calls())
	t1 := lcT0.Add(time.Minute)
	e.clock.set(t1)
	e.mustStart(t, id)
	dom := domainName(id)
	var lifecycle []string
	for _, c := range e.callsSince(n) {
		if strings.HasPrefix(c, "Start ") || strings.HasPrefix(c, "Resume ") {
			lifecycle = append(lifecycle, c)
		}
	}
	if want := []string{"Start " + dom + " paused", "Resume " + dom}; !slices.Equal(lifecycle, want) {
		t.Errorf("libvirt calls = %v, want %v", lifecycle, want)
	}
	if st := e.domainState(t, dom); st.State != libvirttools.DomainRunning {
		t.Errorf("domain is %v", st.State)
	}
	st := e.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != t1.UnixNano() || st.FinishedAt != 0 {
		t.Errorf("status after start = %+v", st)
	}
	rec := e.record(t, id)
	con := e.consoles.last(t)
	if con.socket != serialSocket(rec.RunDir) || con.logPath != filepath.Join(pod.LogDirectory, "vm/0.log") {
		t.Errorf("console on %s logging to %s", con.socket, con.logPath)
	}
	if len(con.socket) > 107 {
		t.Errorf("serial socket path is %d bytes", len(con.socket))
	}

	_, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "RUNNING")
	_, err = e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: strings.Repeat("f", 64)})
	wantCode(t, err, codes.NotFound)
}

// TestStartContainerFailure: a start that fails leaves no VM running and
// the container CREATED, so a later start works.
func TestStartContainerFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(e *lcEnv)
	}{
		{"libvirt start", func(e *lcEnv) { e.lv.FailNext("Start", fmt.Errorf("injected: %w", errdefs.ErrInternal)) }},
		{"console", func(e *lcEnv) { e.consoles.failErr = errors.New("injected: no socket") }},
		{"resume", func(e *lcEnv) { e.lv.FailNext("Resume", fmt.Errorf("injected: %w", errdefs.ErrInternal)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
			tc.fail(e)
			if _, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("StartContainer err = %v", err)
			}
			if st := e.domainState(t, domainName(id)); st.State != libvirttools.DomainShutoff {
				t.Errorf("domain is %v after a failed start", st.State)
			}
			if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
				t.Errorf("container is %v after a failed start", st.State)
			}
			for _, c := range e.consoles.all() {
				if !c.isClosed() {
					t.Errorf("console %s left open", c.socket)
				}
			}
			e.mustStart(t, id)
		})
	}
}

// TestContainerExit maps how a VM stopped to the container's exit.
func TestContainerExit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stop     func(t *testing.T, e *lcEnv, id string)
		code     int32
		reason   string
		message  string
		minTime  time.Duration // how long the stop may take at least
		stopCall bool          // stop is a StopContainer call
	}{
		{name: "guest powers off", stop: func(t *testing.T, e *lcEnv, id string) { e.lv.GuestPowerOff(domainName(id)) },
			code: 0, reason: reasonCompleted, message: "powered off"},
		{name: "crash", stop: func(t *testing.T, e *lcEnv, id string) { e.lv.Crash(domainName(id)) },
			code: exitCrashed, reason: reasonCrashed},
		{name: "destroyed outside vmpod", stop: func(t *testing.T, e *lcEnv, id string) {
			if err := e.lv.Destroy(context.Background(), domainName(id)); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled, message: "outside vmpod"},
		{name: "StopContainer, guest obeys ACPI", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
				t.Fatal(err)
			}
		}, code: 0, reason: reasonCompleted},
		{name: "StopContainer, guest ignores ACPI", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			e.lv.SetIgnoreACPI(domainName(id), true)
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled, message: "stop timeout", minTime: time.Second},
		{name: "StopContainer, timeout 0", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			_, id := e.runningVM(t, "web")
			con := e.consoles.last(t)
			t2 := lcT0.Add(time.Hour)
			e.clock.set(t2)
			start := time.Now()
			tc.stop(t, e, id)
			took := time.Since(start)
			if took < tc.minTime || took > tc.minTime+3*time.Second {
				t.Errorf("stop took %v, want about %v", took, tc.minTime)
			}
			st := e.status(t, id)
			if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != tc.code || st.Reason != tc.reason ||
				st.FinishedAt != t2.UnixNano() || !strings.Contains(st.Message, tc.message) {
				t.Errorf("status = state %v exit %d reason %q message %q finished %d; want EXITED %d %q %q %d",
					st.State, st.ExitCode, st.Reason, st.Message, st.FinishedAt, tc.code, tc.reason, tc.message, t2.UnixNano())
			}
			if tc.code != 0 && st.ExitCode == 0 {
				t.Error("a VM that did not power off itself exited 0")
			}
			if !con.isClosed() {
				t.Error("console reader still open after the VM exited")
			}
			if s := e.domainState(t, domainName(id)); s.State != libvirttools.DomainShutoff {
				t.Errorf("domain is %v", s.State)
			}
			// The exit is recorded, not just reported.
			if rec := e.record(t, id); rec.State != containerExited || rec.ExitCode != tc.code {
				t.Errorf("record = %s exit %d", rec.State, rec.ExitCode)
			}
			if tc.stopCall {
				// Stopping again is a no-op that succeeds.
				n := len(e.lv.Calls())
				if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
					t.Fatalf("second stop: %v", err)
				}
				for _, c := range e.callsSince(n) {
					if strings.HasPrefix(c, "Shutdown") || strings.HasPrefix(c, "Destroy") {
						t.Errorf("second stop called %s", c)
					}
				}
				if again := e.status(t, id); again.ExitCode != tc.code || again.Reason != tc.reason {
					t.Errorf("second stop changed the exit to %d %s", again.ExitCode, again.Reason)
				}
			}
		})
	}
}

func TestStopContainerIdempotent(t *testing.T) {
	e := newLCEnv(t)
	for _, id := range []string{strings.Repeat("e", 64), "abc", ""} {
		if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
			t.Errorf("StopContainer(%q): %v", id, err)
		}
	}
	// A container never started stays created.
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("created container is %v after stop", st.State)
	}
}

func TestRemoveContainer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool
	}{{"exited", false}, {"running", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			sbID, id := e.runningVM(t, "web")
			dom := domainName(id)
			if !tc.running {
				e.lv.GuestPowerOff(dom)
			}
			rec := e.record(t, id)
			if rec.ImageRef != lcImageDebian.ID || rec.ImageDisk != lcImageDebian.Disk() {
				t.Errorf("record image %s disk %s", rec.ImageRef, rec.ImageDisk)
			}
			if !e.svc.ImageDiskInUse(lcImageDebian.Disk()) || e.svc.ImageDiskInUse(lcImageDebian.ID) {
				t.Error("ImageDiskInUse does not report the container's disk file")
			}
			con := e.consoles.last(t)
			n := len(e.lv.Calls())
			if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			calls := e.callsSince(n)
			if _, _, ok := e.lv.Domain(dom); ok {
				t.Errorf("domain %s still defined", dom)
			}
			iDestroy, iUndefine := slices.Index(calls, "Destroy "+dom), slices.Index(calls, "Undefine "+dom)
			if iUndefine < 0 || (tc.running && (iDestroy < 0 || iDestroy > iUndefine)) {
				t.Errorf("calls = %v; want a Destroy before the Undefine of a running VM", calls)
			}
			if !con.isClosed() {
				t.Error("console still open")
			}
			for _, d := range []string{rec.Dir, rec.RunDir} {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left (stat: %v)", d, err)
				}
			}
			e.assertNoContainers(t)
			if ids := e.listContainers(t, nil); len(ids) != 0 {
				t.Errorf("ListContainers = %v", ids)
			}
			if got := e.images.releasedIDs(); !slices.Equal(got, []string{lcImageDebian.Disk()}) {
				t.Errorf("image disks released = %v, want the disk digest %s", got, lcImageDebian.Disk())
			}
			if e.svc.ImageDiskInUse(lcImageDebian.Disk()) {
				t.Error("image disk still in use after the container was removed")
			}
			_, err := e.svc.ContainerStatus(lcCtx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
			wantCode(t, err, codes.NotFound)
			// Idempotent, and the name is free again.
			if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Errorf("second remove: %v", err)
			}
			if got := e.images.releasedIDs(); len(got) != 1 {
				t.Errorf("second remove released the image again: %v", got)
			}
			e.mustCreate(t, sbID, pod, lcContainer("vm"))
		})
	}
	t.Run("unknown", func(t *testing.T) {
		e := newLCEnv(t)
		if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: strings.Repeat("e", 64)}); err != nil {
			t.Errorf("RemoveContainer(unknown): %v", err)
		}
		if got := e.images.releasedIDs(); len(got) != 0 {
			t.Errorf("images released = %v", got)
		}
	})
}

func TestStopAndRemovePodSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID, id := e.runningVM(t, "web")
	otherID, otherVM := e.runningVM(t, "db")
	dom := domainName(id)

	for i := range 2 {
		if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
			t.Fatalf("StopPodSandbox #%d: %v", i+1, err)
		}
	}
	if st := e.podState(t, sbID); st != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("sandbox is %v after stop", st)
	}
	if recs := e.sandboxRecords(t); !slices.ContainsFunc(recs, func(r sandboxRecord) bool { return r.ID == sbID && r.State == sandboxNotReady }) {
		t.Errorf("NOTREADY not stored: %+v", recs)
	}
	if st := e.domainState(t, dom); st.State != libvirttools.DomainShutoff {
		t.Errorf("VM is %v after StopPodSandbox", st.State)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != exitKilled {
		t.Errorf("container = %v exit %d", st.State, st.ExitCode)
	}
	if st := e.status(t, otherVM); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the other pod's VM is %v", st.State)
	}
	next := lcContainer("vm")
	next.Metadata.Attempt = 1
	_, err := e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, "NOTREADY")

	for i := range 2 {
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID}); err != nil {
			t.Fatalf("RemovePodSandbox #%d: %v", i+1, err)
		}
	}
	if ids := e.listPods(t, nil); !slices.Equal(ids, []string{otherID}) {
		t.Errorf("sandboxes after remove = %v", ids)
	}
	if ids := e.listContainers(t, nil); !slices.Equal(ids, []string{otherVM}) {
		t.Errorf("containers after remove = %v", ids)
	}
	if _, _, ok := e.lv.Domain(dom); ok {
		t.Errorf("domain %s still defined", dom)
	}
	if recs := e.sandboxRecords(t); len(recs) != 1 || recs[0].ID != otherID {
		t.Errorf("sandbox records = %+v", recs)
	}
	if recs := e.containerRecords(t); len(recs) != 1 || recs[0].ID != otherVM {
		t.Errorf("container records = %+v", recs)
	}
	_, err = e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbID})
	wantCode(t, err, codes.NotFound)
	// The pod's name is free again.
	e.runPod(t, lcPod("web"))

	t.Run("remove a running pod", func(t *testing.T) {
		n := len(e.lv.Calls())
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: otherID}); err != nil {
			t.Fatal(err)
		}
		d := domainName(otherVM)
		calls := e.callsSince(n)
		if i, j := slices.Index(calls, "Destroy "+d), slices.Index(calls, "Undefine "+d); i < 0 || j < i {
			t.Errorf("calls = %v", calls)
		}
		if _, _, ok := e.lv.Domain(d); ok {
			t.Errorf("domain %s still defined", d)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		unknown := strings.Repeat("9", 64)
		if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: unknown}); err != nil {
			t.Errorf("StopPodSandbox(unknown): %v", err)
		}
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: unknown}); err != nil {
			t.Errorf("RemovePodSandbox(unknown): %v", err)
		}
	})
}

func TestListFilters(t *testing.T) {
	e := newLCEnv(t)
	webPod, dbPod, cachePod := lcPod("web"), lcPod("db"), lcPod("cache")
	cachePod.Labels["tier"] = "backend"
	dbPod.Labels["tier"] = "backend"
	web := e.runPod(t, webPod)
	db := e.runPod(t, dbPod)
	cache := e.runPod(t, cachePod)
	webVM := e.mustCreate(t, web, webPod, lcContainer("vm"))
	e.mustStart(t, webVM)
	dbVM := e.mustCreate(t, db, dbPod, lcContainer("vm"))
	cacheVM := e.mustCreate(t, cache, cachePod, lcContainer("cache"))
	e.mustStart(t, cacheVM)
	e.lv.GuestPowerOff(domainName(cacheVM))
	e.status(t, cacheVM) // notices the exit
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: cache}); err != nil {
		t.Fatal(err)
	}

	sorted := func(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }
	t.Run("sandboxes", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			f    *runtimeapi.PodSandboxFilter
			want []string
		}{
			{"all", nil, sorted(web, db, cache)},
			{"id", &runtimeapi.PodSandboxFilter{Id: db}, []string{db}},
			{"id prefix", &runtimeapi.PodSandboxFilter{Id: web[:12]}, []string{web}},
			{"unknown id", &runtimeapi.PodSandboxFilter{Id: "zzzz"}, nil},
			{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, sorted(web, db)},
			{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, []string{cache}},
			{"label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"}}, sorted(db, cache)},
			{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend", "app": "db"}}, []string{db}},
			{"label and state", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"},
				State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{db}},
			{"no label match", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "frontend"}}, nil},
		} {
			if got := e.listPods(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("containers", func(t *testing.T) {
		state := func(s runtimeapi.ContainerState) *runtimeapi.ContainerStateValue {
			return &runtimeapi.ContainerStateValue{State: s}
		}
		for _, tc := range []struct {
			name string
			f    *runtimeapi.ContainerFilter
			want []string
		}{
			{"all", nil, sorted(webVM, dbVM, cacheVM)},
			{"id", &runtimeapi.ContainerFilter{Id: dbVM}, []string{dbVM}},
			{"id prefix", &runtimeapi.ContainerFilter{Id: webVM[:10]}, []string{webVM}},
			{"running", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, []string{webVM}},
			{"created", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_CREATED)}, []string{dbVM}},
			{"exited", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_EXITED)}, []string{cacheVM}},
			{"pod sandbox", &runtimeapi.ContainerFilter{PodSandboxId: cache}, []string{cacheVM}},
			{"pod sandbox prefix", &runtimeapi.ContainerFilter{PodSandboxId: web[:12]}, []string{webVM}},
			{"label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}}, sorted(webVM, dbVM)},
			{"label and pod", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}, PodSandboxId: db}, []string{dbVM}},
			{"pod and wrong state", &runtimeapi.ContainerFilter{PodSandboxId: db, State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, nil},
		} {
			if got := e.listContainers(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

func TestUpdateContainerResources(t *testing.T) {
	created := &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 200000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 30}
	for _, tc := range []struct {
		name     string
		update   *runtimeapi.LinuxContainerResources
		code     codes.Code
		wantCall string // SetCPUTune arguments, "" for no call
		want     lcDomainShape
	}{
		{name: "shares", update: &runtimeapi.LinuxContainerResources{CpuShares: 512},
			wantCall: "shares=512 period=100000 quota=200000"},
		{name: "quota within the vCPUs", update: &runtimeapi.LinuxContainerResources{CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 30},
			wantCall: "shares=1024 period=100000 quota=50000"},
		{name: "quota beyond the vCPUs", update: &runtimeapi.LinuxContainerResources{CpuQuota: 300000, CpuPeriod: 100000},
			code: codes.FailedPrecondition},
		{name: "memory", update: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 2 << 30},
			code: codes.FailedPrecondition},
		{name: "unchanged", update: created},
		{name: "nothing", update: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: created}
			id := e.mustCreate(t, e.runPod(t, pod), pod, c)
			e.mustStart(t, id)
			before := e.record(t, id).VM
			n := len(e.lv.Calls())
			_, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: tc.update})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
			} else if err != nil {
				t.Fatal(err)
			}
			var tune []string
			for _, c := range e.callsSince(n) {
				if strings.HasPrefix(c, "SetCPUTune") {
					tune = append(tune, c)
				}
			}
			var want []string
			if tc.wantCall != "" {
				want = []string{"SetCPUTune " + domainName(id) + " " + tc.wantCall}
			}
			if !slices.Equal(tune, want) {
				t.Errorf("SetCPUTune calls = %v, want %v", tune, want)
			}
			after := e.record(t, id).VM
			shape := domainShape(e.domainXML(t, domainName(id)))
			if tc.wantCall == "" {
				if after != before {
					t.Errorf("stored VM changed: %+v -> %+v", before, after)
				}
				return
			}
			if uint64(shape.Shares) != after.CPUShares || shape.Quota != after.CPUQuotaUS || shape.Period != after.CPUPeriodUS {
				t.Errorf("domain cputune %+v does not match the stored VM %+v", shape, after)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		e := newLCEnv(t)
		_, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{
			ContainerId: strings.Repeat("e", 64), Linux: &runtimeapi.LinuxContainerResources{CpuShares: 2}})
		wantCode(t, err, codes.NotFound)
	})
}

// TestAttachConsoleFollowsVM: attach streams the console until the VM
// stops, and input reaches the console.
func TestAttachConsoleFollowsVM(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	con := e.consoles.last(t)
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.svc.AttachConsole(lcCtx(t), id, inR, outW, nil, true, nil) }()

	// Wait for the subscription, then feed output.
	deadline := time.Now().Add(5 * time.Second)
	for {
		con.mu.Lock()
		n := len(con.subs)
		con.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("AttachConsole did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go con.feed("login: ")
	buf := make([]byte, 7)
	if _, err := io.ReadFull(outR, buf); err != nil || string(buf) != "login: " {
		t.Fatalf("attach output %q, %v", buf, err)
	}
	if _, err := inW.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	for con.written() != "root\n" {
		if time.Now().After(deadline) {
			t.Fatalf("console input = %q", con.written())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.lv.GuestPowerOff(domainName(id))
	e.status(t, id) // records the exit, closing the console
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("AttachConsole: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AttachConsole did not return after the VM stopped")
	}
	inW.Close()
	err := e.svc.AttachConsole(lcCtx(t), id, nil, nil, nil, false, nil)
	wantCode(t, err, codes.FailedPrecondition)
}

// TestRemovePodSandboxDuringAbandonedCreate: the kubelet gave up on a slow
// CreateContainer and removes the pod while the VM is still being built;
// the build must then leave nothing behind.
func TestRemovePodSandboxDuringAbandonedCreate(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	entered, release := e.overlays.holdCreates()
	defer release()
	ctx, cancel := context.WithTimeout(lcCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := e.svc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: lcContainer("vm"), SandboxConfig: pod})
	wantCode(t, err, codes.DeadlineExceeded)
	<-entered
	removed := make(chan error, 1)
	go func() {
		_, err := e.svc.RemovePodSandbox(lcQuiet(context.Background()), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID})
		removed <- err
	}()
	time.Sleep(50 * time.Millisecond)
	release()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatalf("RemovePodSandbox: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RemovePodSandbox did not return after the create finished")
	}
	e.assertNoContainers(t)
	if ids := e.listPods(t, nil); len(ids) != 0 {
		t.Errorf("sandboxes = %v", ids)
	}
	if recs := e.sandboxRecords(t); len(recs) != 0 {
		t.Errorf("sandbox records = %+v", recs)
	}
	e.runPod(t, lcPod("web"))
}

// TestUpdateResourcesUnchangedLimits: the kubelet's UpdateContainerResources
// carries the container's complete resources, so a CPU-only resize repeats
// the unchanged memory limit and CPU quota.
func TestUpdateResourcesUnchangedLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		created *runtimeapi.LinuxContainerResources
	}{
		{"memory annotation", map[string]string{annMemory: "1Gi"},
			&runtimeapi.LinuxContainerResources{CpuShares: 1024, MemoryLimitInBytes: 512 << 20}},
		{"vcpus annotation", map[string]string{annVCPUs: "1"},
			&runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 200000, CpuPeriod: 100000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			pod.Annotations = tc.ann
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.created}
			id := e.mustCreate(t, e.runPod(t, pod), pod, c)
			e.mustStart(t, id)
			update := proto.Clone(tc.created).(*runtimeapi.LinuxContainerResources)
			update.CpuShares = 512
			if _, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: update}); err != nil {
				t.Fatalf("CPU-shares-only update refused: %v", err)
			}
			if got := domainShape(e.domainXML(t, domainName(id))).Shares; got != 512 {
				t.Errorf("domain shares = %d, want 512", got)
			}
		})
	}
}

// TestContainerStatusReportsUpdatedResources: after an update, the
// kubelet reads the applied resources back from ContainerStatus to see
// that an in-place resize is done.
func TestContainerStatusReportsUpdatedResources(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	c := lcContainer("vm")
	c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 1024}}
	id := e.mustCreate(t, e.runPod(t, pod), pod, c)
	e.mustStart(t, id)
	if _, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512}}); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, id).GetResources().GetLinux().GetCpuShares(); got != 512 {
		t.Errorf("ContainerStatus reports cpu shares %d after the update to 512", got)
	}
}

// TestStartContainerNeedsReadySandbox: a stopped sandbox runs no VM.
func TestStartContainerNeedsReadySandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition)
	if st := e.domainState(t, domainName(id)); st.State != libvirttools.DomainShutoff {
		t.Errorf("VM is %v in a NOTREADY sandbox", st.State)
	}
}

// TestCreateAfterFailedRollback: libvirt fails a create and then its
// rollback (a libvirtd hiccup); once libvirt is back, the kubelet's retry
// must be able to create the VM.
func TestCreateAfterFailedRollback(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	e.lv.FailNext("Define", fmt.Errorf("injected: %w", errdefs.ErrUnavailable))
	e.lv.FailNext("Destroy", fmt.Errorf("injected: %w", errdefs.ErrUnavailable))
	_, err := e.create(sbID, pod, lcContainer("vm"))
	wantCode(t, err, codes.Unavailable)
	id, err := e.create(sbID, pod, lcContainer("vm"))
	if err != nil {
		t.Fatalf("retry after libvirt recovered: %v", err)
	}
	if doms := e.domains(t); len(doms) != 1 || doms[0] != domainName(id) {
		t.Errorf("domains = %v", doms)
	}
}
