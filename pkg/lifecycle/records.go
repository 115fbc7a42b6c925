package lifecycle

import (
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/podspec"
)

// Sandbox states, as stored:
//
//	RunPodSandbox ──> CREATING ──(netns + CNI ADD)──> READY ──StopPodSandbox──> NOTREADY ──RemovePodSandbox──> (gone)
//
// A sandbox owns no domain of its own: the VM is its container. It owns
// the pod's network (pkg/cni): set up while CREATING, torn down by
// StopPodSandbox (NetworkDown records that). A CREATING record found at
// start-up is a crash mid-RunPodSandbox: its network is torn down and the
// record removed.
const (
	SandboxCreating = "CREATING"
	SandboxReady    = "READY"
	SandboxNotReady = "NOTREADY"
)

// SandboxRecord is a sandbox as persisted in the metadata store.
type SandboxRecord struct {
	ID        string `json:"id"`
	Name      string `json:"name"` // name_namespace_uid_attempt, reserved
	Handler   string `json:"handler"`
	State     string `json:"state"`
	CreatedAt int64  `json:"created_at"`
	// Config is the PodSandboxConfig as protojson.
	Config []byte `json:"config"`
	// Options are the pod's annotations, parsed once by RunPodSandbox.
	// Records written before they were stored have none: recovery parses
	// them from Config.
	Options *podspec.Options `json:"options,omitempty"`
	// Network is the pod's network; nil when vmpod runs without one.
	Network *cni.Attachment `json:"network,omitempty"`
	// NetworkDown is set once the network is torn down.
	NetworkDown bool `json:"network_down,omitempty"`
	// Overhead is the pod's overhead (LinuxContainerResources as
	// protojson) from the last UpdatePodSandboxResources; until one, the
	// config's.
	Overhead []byte `json:"overhead,omitempty"`
}

// LiveNetwork returns the sandbox's network while it is up, else nil.
func (r SandboxRecord) LiveNetwork() *cni.Attachment {
	if r.NetworkDown {
		return nil
	}
	return r.Network
}

// Container states, as stored:
//
//	CreateContainer ──> CREATING ──(overlay + domain defined)──> CREATED
//	CREATED ──StartContainer──> RUNNING ──(domain off: poweroff, crash, StopContainer)──> EXITED
//	any ──RemoveContainer──> (gone)
//
// CREATING exists only while CreateContainer runs; a CREATING record found
// at start-up is a crash mid-create and is cleaned up. A create whose
// rollback failed leaves its record EXITED (with the reason) so that
// RemoveContainer can retry the cleanup.
const (
	ContainerCreating = "CREATING"
	ContainerCreated  = "CREATED"
	ContainerRunning  = "RUNNING"
	ContainerExited   = "EXITED"
)

// ContainerRecord is a container (one VM boot) as persisted.
type ContainerRecord struct {
	ID        string `json:"id"`
	SandboxID string `json:"sandbox_id"`
	Name      string `json:"name"` // reserved name
	State     string `json:"state"`
	ImageName string `json:"image_name"`
	ImageRef  string `json:"image_ref"` // image ID
	// ImageDisk is the digest of the image's disk file backing the root
	// overlay; the file is kept while a container uses it.
	ImageDisk  string `json:"image_disk"`
	LogPath    string `json:"log_path,omitempty"`
	Domain     string `json:"domain"`
	Dir        string `json:"dir"`
	RunDir     string `json:"run_dir"`
	RootDisk   string `json:"root_disk"`
	CreatedAt  int64  `json:"created_at"`
	StartedAt  int64  `json:"started_at,omitempty"`
	FinishedAt int64  `json:"finished_at,omitempty"`
	ExitCode   int32  `json:"exit_code"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	// StopRequested is set by StopContainer so a destroyed domain is
	// reported as killed by the stop, not as a crash.
	StopRequested bool `json:"stop_requested,omitempty"`
	// Resources are the Linux resources applied to the VM: those of the
	// create request, then of each UpdateContainerResources (protojson).
	Resources []byte        `json:"resources,omitempty"`
	Config    []byte        `json:"config"` // ContainerConfig as protojson
	VM        podspec.Shape `json:"vm"`
	// Cgroup is where the VM runs in its pod's cgroup, with its limits:
	// planned before the domain starts, as applied once it did; nil for a
	// pod without a cgroup_parent (libvirt's own cgroup then).
	Cgroup *cgroups.Placement `json:"cgroup,omitempty"`
	// Command is the state of the container's command, which runs in the
	// guest as its main process (container_command.go); nil when the
	// container has none (the VM is the workload) and in records of
	// vmpods from before commands ran this way.
	Command *CommandState `json:"command,omitempty"`
	// Restore is set on a container created from a checkpoint archive
	// (restore.go).
	Restore *RestoreState `json:"restore,omitempty"`
	// WarmStart is set on a container booted cold with warm start on:
	// once it is ready, vmpod saves its template (warmstart.go).
	WarmStart *WarmStartState `json:"warm_start,omitempty"`
}

// CommandState is what is known of a container's command, stored at each
// step so that a vmpod that restarts knows where it was:
//
//	VM running ──agent answers──> Starting ──guest-exec──> PID set ──it exits──> Exited (code)
//	      └── agent never answers (command_start_timeout) ──────────────────────> Exited (128, StartError)
//
// Exited comes before the VM is shut down: the container becomes EXITED,
// with the command's code, once the VM is off.
type CommandState struct {
	// Nonce marks the wrapper's end lines on the output ports.
	Nonce string `json:"nonce"`
	// Starting is set just before the guest-exec that starts the
	// command: a vmpod that restarts before PID is stored asks the guest
	// whether it runs.
	Starting bool `json:"starting,omitempty"`
	// PID is the guest pid of the command's wrapper.
	PID int `json:"pid,omitempty"`
	// Exited is set once the command's exit is known: ExitCode, Reason,
	// Message and FinishedAt are then the container's.
	Exited     bool   `json:"exited,omitempty"`
	ExitCode   int32  `json:"exit_code,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	FinishedAt int64  `json:"finished_at,omitempty"`
}

// updateCommand changes a copy of the record's command state (records are
// values: a change replaces the pointer).
func (r *ContainerRecord) updateCommand(fn func(*CommandState)) {
	if r.Command == nil {
		return
	}
	cs := *r.Command
	fn(&cs)
	r.Command = &cs
}

// guarded is a record that persists itself. Update copies the record,
// applies a change to the copy, writes the copy to the store and swaps it
// in, as one step: a reader never sees a change that was not stored, and
// a failed write changes nothing. Readers (Get) take only mu, so they
// never wait behind a store write; writers are serialised by wmu. After a
// swap, changed (may be nil) is told the old and new record, with wmu
// still held, so that it sees the changes of one record in order.
//
// Records are values: a change replaces slices and pointers (Config,
// Resources, Network) rather than mutating what they point to.
type guarded[R any] struct {
	wmu     sync.Mutex
	mu      sync.Mutex
	rec     R
	save    func(R) error
	changed func(old, new R)
}

// Get returns the record.
func (g *guarded[R]) Get() R {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rec
}

// Update applies fn to a copy of the record and persists and swaps it in.
// An error from fn or from the store leaves the record as it was.
func (g *guarded[R]) Update(fn func(*R) error) (R, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	old := g.Get()
	next := old
	if err := fn(&next); err != nil {
		return old, err
	}
	if err := g.save(next); err != nil {
		return old, err
	}
	g.mu.Lock()
	g.rec = next
	g.mu.Unlock()
	if g.changed != nil {
		g.changed(old, next)
	}
	return next, nil
}

func encodeSandboxConfig(c *runtimeapi.PodSandboxConfig) ([]byte, error) { return protojson.Marshal(c) }

func decodeSandboxConfig(b []byte) (*runtimeapi.PodSandboxConfig, error) {
	c := &runtimeapi.PodSandboxConfig{}
	return c, protojson.Unmarshal(b, c)
}

func encodeResources(r *runtimeapi.LinuxContainerResources) ([]byte, error) {
	if r == nil {
		return nil, nil
	}
	return protojson.Marshal(r)
}

// decodeResources returns the stored resources, or fallback when none were
// stored.
func decodeResources(b []byte, fallback *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	if len(b) == 0 {
		return fallback
	}
	r := &runtimeapi.LinuxContainerResources{}
	if protojson.Unmarshal(b, r) != nil {
		return fallback
	}
	return r
}

func encodeContainerConfig(c *runtimeapi.ContainerConfig) ([]byte, error) {
	return protojson.Marshal(c)
}

func decodeContainerConfig(b []byte) (*runtimeapi.ContainerConfig, error) {
	c := &runtimeapi.ContainerConfig{}
	return c, protojson.Unmarshal(b, c)
}
