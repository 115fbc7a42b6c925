// Package lifecycle owns VM pods: sandboxes and their containers (one VM
// each), from RunPodSandbox to RemovePodSandbox. It keeps their records
// (which persist themselves: records.go), drives their state machines,
// rolls back every multi-step operation that fails half-way, recovers
// after a restart, watches running VMs for exits, and publishes container
// events from the state transitions themselves.
//
// The CRI layer (pkg/cri) is a thin adapter over the Controller: request
// protos in, one Controller call, response protos out. Everything below is
// reached through narrow dependencies: libvirt (libvirttools.Connection),
// the pod network (Network), the image store (Images), the serial console
// reader (ConsoleFactory), the guest agent (pkg/guest), cloud-init
// (pkg/cloudinit) and the parsed pod options (pkg/podspec).
//
//	kubelet ──CRI──> pkg/cri ──> Controller ──> records (pkg/store)
//	                                      ├──> Network (pkg/cni)
//	                                      ├──> libvirt (pkg/libvirttools)
//	                                      ├──> cloud-init seed, overlays
//	                                      └──> guest agent (pkg/guest)
package lifecycle

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmpod/vmpod/pkg/broadcast"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/metrics"
	"github.com/vmpod/vmpod/pkg/pending"
	"github.com/vmpod/vmpod/pkg/store"
)

// Images is what the lifecycle needs from the image store (*image.Store
// implements it). Errors wrap errdefs classes.
type Images interface {
	// Get returns the image a name or ID refers to, or an error wrapping
	// errdefs.ErrNotFound.
	Get(ref string) (image.Image, error)
	// Path returns the file of image id.
	Path(id string) string
	// Release tells the store a container whose overlay was backed by the
	// disk file with digest d is gone.
	Release(d string)
}

// ConsoleHandle is a VM's serial console reader (pkg/console), with the
// output streams of its container's command.
type ConsoleHandle interface {
	Subscribe() (io.ReadCloser, error)
	Write(p []byte) (int, error)
	ReopenLog() error
	Close() error
	Done() <-chan struct{}
	// OutputEnded is closed once the command's output streams ended (at
	// once when there are none).
	OutputEnded() <-chan struct{}
}

// ConsoleSpec is what a VM's console reader reads and where it logs.
type ConsoleSpec struct {
	// Socket is the serial console's socket, LogPath the CRI log.
	Socket, LogPath string
	// Stdout and Stderr are the sockets of the command's output ports;
	// "" when the container has no command.
	Stdout, Stderr string
	// Nonce marks the wrapper's end lines on the output ports.
	Nonce string
}

// ConsoleFactory starts the console reader of a VM: it connects to the
// serial socket (and the command's output ports) and writes the CRI log.
type ConsoleFactory func(spec ConsoleSpec, log *slog.Logger) (ConsoleHandle, error)

// Network is the pods' network (*cni.Manager implements it; see pkg/cni
// for the life of a pod's network). Errors wrap errdefs classes where the
// caller can act on them.
type Network interface {
	// Ready says whether pods can get a network; the error says why not.
	Ready() error
	// Plan picks the network for a new sandbox without creating anything.
	Plan(sandboxID string, pod cni.PodInfo) (*cni.Attachment, error)
	// Setup creates the netns, runs CNI ADD and fills in the attachment;
	// persist is called with the ADD result in att, before the interfaces
	// are rewired.
	Setup(ctx context.Context, att *cni.Attachment, persist func() error) error
	// Teardown removes everything of att; idempotent.
	Teardown(ctx context.Context, att *cni.Attachment) error
	// PrepareVM creates a boot's taps in the host netns.
	PrepareVM(att *cni.Attachment) error
	// PlugVM moves a started VM's taps into the pod and starts DHCP.
	PlugVM(att *cni.Attachment, guest cni.Guest) error
	// UnplugVM removes a failed boot's taps and DHCP servers.
	UnplugVM(att *cni.Attachment) error
	// ServeDHCP restarts the DHCP servers of a running VM (after a restart).
	ServeDHCP(att *cni.Attachment, guest cni.Guest) error
	// Usage reads the pod interfaces' traffic counters.
	Usage(att *cni.Attachment) ([]cni.Usage, error)
}

// Options are the Controller's dependencies.
type Options struct {
	// Config is the daemon's configuration, with accelerators resolved
	// (config.Config.ResolveAccelerators).
	Config     config.Config
	Images     Images
	Libvirt    libvirttools.Connection
	Meta       *store.Store
	Log        *slog.Logger
	NewConsole ConsoleFactory
	// Overlays makes root disks; nil uses qemu-img.
	Overlays OverlayMaker
	// Network is the pod network; nil runs pods without one.
	Network Network
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// HostCheck is a problem found on the host at start-up that makes VMs
	// slow or failing; Health reports it.
	HostCheck string
	// Metrics receives the lifecycle's metrics; nil records nothing.
	Metrics *metrics.Metrics
	// EventBuffer is how many events a subscriber may fall behind before
	// it is disconnected; 0 is the default (256).
	EventBuffer int
	// ReadOnlyVirtiofsd is the virtiofsd of read-only virtiofs shares
	// (volumes.InstallReadOnlyVirtiofsd); without it they are refused.
	ReadOnlyVirtiofsd string
	// Cgroups places VMs in their pods' cgroups; nil when the node's
	// cgroups cannot be used (CgroupsErr says why), and then a pod with
	// a cgroup_parent is refused.
	Cgroups    Cgroups
	CgroupsErr error
	// StatsWait is the longest a stats call waits for the sampling round
	// it needs (stats_collector.go) before it answers from the last
	// samples; 0 is DefaultStatsWait.
	StatsWait time.Duration
}

// Controller runs VM pods.
type Controller struct {
	cfg        config.Config
	images     Images
	libvirt    libvirttools.Connection
	log        *slog.Logger
	reg        *registry
	newConsole ConsoleFactory
	overlays   OverlayMaker
	net        Network
	now        func() time.Time
	hostCheck  string
	metrics    *metrics.Metrics
	// roVirtiofsd runs read-only virtiofs shares.
	roVirtiofsd string
	// cgroups places VMs in their pods' cgroups (cgroup.go); nil when
	// the node's cgroups are unusable, cgroupsErr says why.
	cgroups    Cgroups
	cgroupsErr string
	// pending holds creates whose caller gave up (deadline) while the work
	// went on, by reserved name, so the retry gets the result.
	pending *pending.Work
	// events fans events out to subscribers; eventMu makes building and
	// publishing an event one step, so subscribers see events in
	// created-at order.
	events  *broadcast.Broadcaster[Event]
	eventMu sync.Mutex

	// stats holds the stats collector's samples (stats_collector.go);
	// statsWait bounds a call's wait for a round.
	stats     statsCache
	statsWait time.Duration

	ownerMu sync.Mutex
	// tmplMu guards tmplBuilding: the warm start keys whose template a
	// container is saving (warmstart.go).
	tmplMu       sync.Mutex
	tmplBuilding map[string]bool
	owners       map[string]libvirttools.Owner // by domain type: who QEMU runs as
}

// New returns a Controller over its dependencies. Call Recover before
// serving calls, then run Monitor.
func New(o Options) *Controller {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Overlays == nil {
		o.Overlays = QemuImg{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = eventBufferSize
	}
	if o.StatsWait <= 0 {
		o.StatsWait = DefaultStatsWait
	}
	c := &Controller{
		cfg: o.Config, images: o.Images, libvirt: o.Libvirt, log: o.Log,
		newConsole: o.NewConsole, overlays: o.Overlays, net: o.Network, now: o.Now,
		hostCheck: o.HostCheck, metrics: o.Metrics, roVirtiofsd: o.ReadOnlyVirtiofsd, cgroups: o.Cgroups,
		pending: pending.New(), events: broadcast.New[Event](o.EventBuffer, "container event"),
		statsWait: o.StatsWait,
	}
	if o.CgroupsErr != nil {
		c.cgroupsErr = o.CgroupsErr.Error()
	} else if o.Cgroups == nil {
		c.cgroupsErr = "none configured"
	}
	c.reg = newRegistry(o.Meta, c.sandboxChanged, c.containerChanged)
	o.Metrics.SetSnapshot(c.metricsSnapshot)
	return c
}

// RunDir is where per-VM sockets live: beside the CRI socket, because
// unix socket paths are limited to 107 bytes and the state dir may be deep.
func (c *Controller) RunDir() string { return filepath.Join(filepath.Dir(c.cfg.Socket), "vms") }

// ContainersDir holds each container's directory (root overlay, seed,
// serial log).
func (c *Controller) ContainersDir() string { return filepath.Join(c.cfg.StateDir, "containers") }

// ImageDiskInUse reports whether a container's root overlay is backed by
// the image disk file with digest d.
func (c *Controller) ImageDiskInUse(d string) bool { return c.reg.diskInUse(d) }
