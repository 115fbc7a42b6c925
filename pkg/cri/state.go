package cri

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/store"
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
	sandboxCreating = "CREATING"
	sandboxReady    = "READY"
	sandboxNotReady = "NOTREADY"
)

// sandboxRecord is a sandbox as persisted in the metadata store.
type sandboxRecord struct {
	ID        string `json:"id"`
	Name      string `json:"name"` // name_namespace_uid_attempt, reserved
	Handler   string `json:"handler"`
	State     string `json:"state"`
	CreatedAt int64  `json:"created_at"`
	// Config is the PodSandboxConfig as protojson.
	Config []byte `json:"config"`
	// Network is the pod's network; nil when vmpod runs without one.
	Network *cni.Attachment `json:"network,omitempty"`
	// NetworkDown is set once the network is torn down.
	NetworkDown bool `json:"network_down,omitempty"`
}

// Container states, as stored:
//
//	CreateContainer ──> CREATING ──(overlay + domain defined)──> CREATED
//	CREATED ──StartContainer──> RUNNING ──(domain off: poweroff, crash, StopContainer)──> EXITED
//	any ──RemoveContainer──> (gone)
//
// CREATING exists only while CreateContainer runs; a CREATING record found
// at start-up is a crash mid-create and is cleaned up.
const (
	containerCreating = "CREATING"
	containerCreated  = "CREATED"
	containerRunning  = "RUNNING"
	containerExited   = "EXITED"
)

// containerRecord is a container (one VM boot) as persisted.
type containerRecord struct {
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
	Resources []byte `json:"resources,omitempty"`
	Config    []byte `json:"config"` // ContainerConfig as protojson
	VM        vmSpec `json:"vm"`
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

// sandbox is a live sandbox. op serialises CreateContainer (which holds it
// while it builds the VM, making "no other live VM" and the creation one
// step) with StopPodSandbox and RemovePodSandbox; mu guards rec and is held
// only to read or swap it, so List and Status never wait behind a create.
type sandbox struct {
	op     sync.Mutex
	mu     sync.Mutex
	rec    sandboxRecord
	config *runtimeapi.PodSandboxConfig
}

// state returns the sandbox's state.
func (sb *sandbox) state() string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.rec.State
}

// container is a live container. Two locks: op serialises lifecycle
// operations (start, stop, remove, update, exit detection) and may be held
// across libvirt calls; mu guards the fields and is held only to read or
// swap them, so List and Status calls never wait behind a slow stop.
type container struct {
	op      sync.Mutex
	mu      sync.Mutex
	rec     containerRecord
	config  *runtimeapi.ContainerConfig
	console ConsoleHandle // nil unless running
	// ttyPorts are the VM's exec channels in use by TTY execs.
	ttyPorts ttyPortSet
}

// snapshot returns the record and config.
func (c *container) snapshot() (containerRecord, *runtimeapi.ContainerConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec, c.config
}

// setRec replaces the record.
func (c *container) setRec(rec containerRecord) {
	c.mu.Lock()
	c.rec = rec
	c.mu.Unlock()
}

// getConsole returns the console reader, nil unless running.
func (c *container) getConsole() ConsoleHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.console
}

// state holds membership of sandboxes and containers and the reserved
// names. It guards only membership; objects guard themselves (their mu).
type state struct {
	meta *store.Store

	mu         sync.RWMutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	names      map[string]string // reserved name -> ID (sandboxes and containers share no names: containers' carry the sandbox ID)
}

func newState(meta *store.Store) *state {
	return &state{meta: meta, sandboxes: map[string]*sandbox{}, containers: map[string]*container{}, names: map[string]string{}}
}

// reserve takes name for id, or reports who holds it.
func (st *state) reserve(name, id string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if holder, ok := st.names[name]; ok && holder != id {
		return fmt.Errorf("name %q is reserved for %s: %w", name, holder, errdefs.ErrAlreadyExists)
	}
	st.names[name] = id
	return nil
}

func (st *state) release(name, id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.names[name] == id {
		delete(st.names, name)
	}
}

func (st *state) nameHolder(name string) (string, bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	id, ok := st.names[name]
	return id, ok
}

// resolve finds a full ID from an ID or a unique prefix of one.
func resolve[T any](m map[string]T, id string) (T, string, bool) {
	var zero T
	if v, ok := m[id]; ok {
		return v, id, true
	}
	if len(id) < 6 {
		return zero, "", false
	}
	var found string
	for k := range m {
		if strings.HasPrefix(k, id) {
			if found != "" {
				return zero, "", false
			}
			found = k
		}
	}
	if found == "" {
		return zero, "", false
	}
	return m[found], found, true
}

func (st *state) getSandbox(id string) (*sandbox, error) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	sb, _, ok := resolve(st.sandboxes, id)
	if !ok {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return sb, nil
}

func (st *state) getContainer(id string) (*container, error) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	c, _, ok := resolve(st.containers, id)
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (st *state) addSandbox(sb *sandbox) {
	st.mu.Lock()
	st.sandboxes[sb.rec.ID] = sb
	st.mu.Unlock()
}

func (st *state) removeSandbox(id string) {
	st.mu.Lock()
	delete(st.sandboxes, id)
	st.mu.Unlock()
}

func (st *state) addContainer(c *container) {
	st.mu.Lock()
	st.containers[c.rec.ID] = c
	st.mu.Unlock()
}

func (st *state) removeContainer(id string) {
	st.mu.Lock()
	delete(st.containers, id)
	st.mu.Unlock()
}

func (st *state) listSandboxes() []*sandbox {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]*sandbox, 0, len(st.sandboxes))
	for _, sb := range st.sandboxes {
		out = append(out, sb)
	}
	slices.SortFunc(out, func(a, b *sandbox) int { return strings.Compare(a.rec.ID, b.rec.ID) })
	return out
}

func (st *state) listContainers() []*container {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]*container, 0, len(st.containers))
	for _, c := range st.containers {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *container) int { return strings.Compare(a.rec.ID, b.rec.ID) })
	return out
}

// containersOf returns the containers of a sandbox.
func (st *state) containersOf(sandboxID string) []*container {
	var out []*container
	for _, c := range st.listContainers() {
		if c.rec.SandboxID == sandboxID {
			out = append(out, c)
		}
	}
	return out
}

// diskInUse reports whether any container's root overlay is backed by the
// image disk file with digest d.
func (st *state) diskInUse(d string) bool {
	st.mu.RLock()
	defer st.mu.RUnlock()
	for _, c := range st.containers {
		if rec, _ := c.snapshot(); rec.ImageDisk == d {
			return true
		}
	}
	return false
}

func (st *state) saveSandbox(rec sandboxRecord) error {
	return st.meta.Put(store.Sandboxes, rec.ID, rec)
}

func (st *state) saveContainer(rec containerRecord) error {
	return st.meta.Put(store.Containers, rec.ID, rec)
}
