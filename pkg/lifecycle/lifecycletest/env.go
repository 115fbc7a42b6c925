package lifecycletest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/libvirttools/fake"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/metrics"
	"github.com/vmpod/vmpod/pkg/store"
)

// T0 is the fake clock's start.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Ctx is the test's context with a logger that discards (the lifecycle
// logs through the context's logger).
func Ctx(t testing.TB) context.Context { return logging.With(t.Context(), QuietLog()) }

// QuietLog discards everything.
func QuietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Env is a lifecycle.Controller with its dependencies: the libvirt fake,
// a real metadata store in a temp dir, and the fakes of this package.
type Env struct {
	Cfg      config.Config
	RunRoot  string // dir of the CRI socket; per-VM sockets go under vms/
	StateDir string
	MetaPath string
	Meta     *store.Store
	LV       *fake.Connection
	Images   *Images
	Overlays *Overlays
	Consoles *Consoles
	Clock    *Clock
	Net      *Network
	// Cgroups places VMs of pods with a cgroup_parent (cgroupfs driver);
	// nil before NewPods runs pods without usable cgroups.
	Cgroups *Cgroups
	// Metrics, when set before NewPods, receives the controller's metrics.
	Metrics *metrics.Metrics
	// EventBuffer, when set before NewPods, is the controller's event
	// buffer per subscriber.
	EventBuffer int
	// StatsWait, when set before NewPods, is the controller's bound on a
	// stats call's wait for a round; 0 waits a minute, so that a call
	// always gets the round it asks for on a slow test machine.
	StatsWait time.Duration
	Pods      *lifecycle.Controller
}

// NewEnv builds an Env with a ready network, TCG guests and handlers
// "vmpod" and "small" (TCG translation cache 256 MiB).
func NewEnv(t testing.TB) *Env {
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
	// A VM without an agent fails an exec after this, not a minute.
	cfg.AgentWaitTimeout = config.Duration(200 * time.Millisecond)
	cfg.Runtimes = map[string]config.Runtime{"vmpod": {}, "small": {TCGTBCacheMiB: 256}}
	e := &Env{
		Cfg: cfg, RunRoot: runRoot, StateDir: stateDir, MetaPath: filepath.Join(stateDir, "metadata.db"),
		LV:       fake.New(),
		Images:   &Images{Dir: t.TempDir(), Images: []image.Image{ImageDebian, ImageAlpine}},
		Overlays: &Overlays{}, Consoles: &Consoles{}, Clock: NewClock(T0), Net: NewNetwork(),
		Cgroups: NewCgroups(t, "cgroupfs"),
	}
	e.OpenStore(t)
	t.Cleanup(func() { e.Meta.Close() })
	e.Pods = e.NewPods()
	return e
}

// OpenStore opens the metadata store.
func (e *Env) OpenStore(t testing.TB) {
	t.Helper()
	meta, err := store.Open(e.MetaPath)
	if err != nil {
		t.Fatal(err)
	}
	e.Meta = meta
}

// NewPods builds a Controller over the Env's dependencies as they are now.
func (e *Env) NewPods() *lifecycle.Controller {
	o := lifecycle.Options{
		Config: e.Cfg, Images: e.Images, Libvirt: e.LV, Meta: e.Meta, Log: QuietLog(),
		NewConsole: e.Consoles.New, Overlays: e.Overlays, Now: e.Clock.Now, Network: e.Net, Metrics: e.Metrics,
		EventBuffer: e.EventBuffer, ReadOnlyVirtiofsd: "/var/lib/vmpod/bin/vmpod-virtiofsd-ro",
		StatsWait: e.StatsWait,
	}
	if o.StatsWait == 0 {
		o.StatsWait = time.Minute
	}
	if e.Cgroups != nil {
		o.Cgroups = e.Cgroups
	} else {
		o.CgroupsErr = errors.New("no cgroup hierarchy with the memory controller under /sys/fs/cgroup")
	}
	return lifecycle.New(o)
}

// Restart simulates vmpod being killed and started again: the old
// Controller is abandoned as is (consoles not closed), the metadata store
// reopened, and a new Controller built over it and the same libvirt.
// Recover is the caller's.
func (e *Env) Restart(t testing.TB) *lifecycle.Controller {
	t.Helper()
	if err := e.Meta.Close(); err != nil {
		t.Fatal(err)
	}
	e.OpenStore(t)
	e.Pods = e.NewPods()
	return e.Pods
}

// Record reads a container's stored record.
func (e *Env) Record(t testing.TB, id string) lifecycle.ContainerRecord {
	t.Helper()
	var rec lifecycle.ContainerRecord
	if err := e.Meta.Get(store.Containers, id, &rec); err != nil {
		t.Fatalf("container record %s: %v", id, err)
	}
	return rec
}

// ContainerRecords reads every stored container record.
func (e *Env) ContainerRecords(t testing.TB) []lifecycle.ContainerRecord {
	t.Helper()
	recs, err := store.List[lifecycle.ContainerRecord](e.Meta, store.Containers)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// SandboxRecords reads every stored sandbox record.
func (e *Env) SandboxRecords(t testing.TB) []lifecycle.SandboxRecord {
	t.Helper()
	recs, err := store.List[lifecycle.SandboxRecord](e.Meta, store.Sandboxes)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Domains lists the fake's domain names (this records a List call).
func (e *Env) Domains(t testing.TB) []string {
	t.Helper()
	doms, err := e.LV.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range doms {
		names = append(names, d.Name)
	}
	return names
}

// DomainState is a defined domain's state.
func (e *Env) DomainState(t testing.TB, name string) libvirttools.DomainStatus {
	t.Helper()
	_, st, ok := e.LV.Domain(name)
	if !ok {
		t.Fatalf("domain %s is not defined", name)
	}
	return st
}

// DomainXML is a defined domain's definition.
func (e *Env) DomainXML(t testing.TB, name string) *libvirtxml.Domain {
	t.Helper()
	doc, _, ok := e.LV.Domain(name)
	if !ok {
		t.Fatalf("domain %s is not defined", name)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		t.Fatalf("domain %s XML: %v", name, err)
	}
	return &dom
}

// CallsSince returns the libvirt fake's calls from index n on.
func (e *Env) CallsSince(n int) []string { return e.LV.Calls()[n:] }

// DirEntries lists dir; a missing dir is empty.
func DirEntries(t testing.TB, dir string) []string {
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

// AssertNoContainers checks that no container is left anywhere: no
// record, no listed container, no domain, no container or socket
// directory, no overlay.
func (e *Env) AssertNoContainers(t testing.TB) {
	t.Helper()
	if recs := e.ContainerRecords(t); len(recs) != 0 {
		t.Errorf("container records left: %+v", recs)
	}
	if cs := e.Pods.Containers(); len(cs) != 0 {
		t.Errorf("%d containers left in memory", len(cs))
	}
	if doms := e.Domains(t); len(doms) != 0 {
		t.Errorf("domains left: %v", doms)
	}
	if d := DirEntries(t, e.Pods.ContainersDir()); len(d) != 0 {
		t.Errorf("container directories left: %v", d)
	}
	if d := DirEntries(t, e.Pods.RunDir()); len(d) != 0 {
		t.Errorf("socket directories left: %v", d)
	}
	for _, c := range e.Overlays.Made() {
		if _, err := os.Stat(c.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("overlay %s left (stat: %v)", c.Path, err)
		}
	}
}
