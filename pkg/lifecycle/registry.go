package lifecycle

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/store"
)

// sandbox is a live sandbox. op serialises CreateContainer (which holds it
// while it builds the VM, making "no other live VM" and the creation one
// step) with StopPodSandbox and RemovePodSandbox. The record guards
// itself (guarded); config is fixed.
type sandbox struct {
	op sync.Mutex
	guarded[SandboxRecord]
	config *runtimeapi.PodSandboxConfig
}

// container is a live container. op serialises lifecycle operations
// (start, stop, remove, update, exit detection) and may be held across
// libvirt calls; the record guards itself, so List and Status calls never
// wait behind a slow stop.
type container struct {
	op sync.Mutex
	guarded[ContainerRecord]
	config *runtimeapi.ContainerConfig

	cmu     sync.Mutex
	console ConsoleHandle // nil unless running; guarded by cmu
	reports []string      // what the guest reported on its console; guarded by cmu
	run     *commandRun   // the command's runner while the VM runs; guarded by cmu
	// ttyPorts are the VM's exec channels in use by TTY execs.
	ttyPorts guest.PortSet
}

// getConsole returns the console reader, nil unless running.
func (c *container) getConsole() ConsoleHandle {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.console
}

// swapConsole installs con (nil to detach) and returns the one it replaced.
func (c *container) swapConsole(con ConsoleHandle) ConsoleHandle {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	old := c.console
	c.console = con
	return old
}

// getRun returns the command's runner, nil unless one runs.
func (c *container) getRun() *commandRun {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.run
}

// swapRun installs run (nil to detach) and returns the one it replaced.
func (c *container) swapRun(run *commandRun) *commandRun {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	old := c.run
	c.run = run
	return old
}

// registry holds which sandboxes and containers exist and the reserved
// names. It guards only membership; objects guard themselves. Adding and
// removing a member writes or deletes its record together with the
// membership change.
type registry struct {
	meta *store.Store
	// sandboxChanged and containerChanged are told of every stored change
	// of a record (events are published from them).
	sandboxChanged   func(sb *sandbox, old, new SandboxRecord)
	containerChanged func(c *container, old, new ContainerRecord)

	mu         sync.RWMutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	names      map[string]string // reserved name -> ID (sandboxes and containers share no names: containers' carry the sandbox ID)
}

func newRegistry(meta *store.Store, sbChanged func(*sandbox, SandboxRecord, SandboxRecord), cChanged func(*container, ContainerRecord, ContainerRecord)) *registry {
	return &registry{
		meta: meta, sandboxChanged: sbChanged, containerChanged: cChanged,
		sandboxes: map[string]*sandbox{}, containers: map[string]*container{}, names: map[string]string{},
	}
}

// reserve takes name for id, or reports who holds it.
func (r *registry) reserve(name, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if holder, ok := r.names[name]; ok && holder != id {
		return fmt.Errorf("name %q is reserved for %s: %w", name, holder, errdefs.ErrAlreadyExists)
	}
	r.names[name] = id
	return nil
}

// release frees name if id holds it.
func (r *registry) release(name, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] == id {
		delete(r.names, name)
	}
}

// newSandbox makes a sandbox object whose record persists itself (store
// the first version with sb.save); it is not a member until addSandbox.
func (r *registry) newSandbox(rec SandboxRecord, cfg *runtimeapi.PodSandboxConfig) *sandbox {
	sb := &sandbox{config: cfg}
	sb.rec = rec
	sb.save = func(rec SandboxRecord) error { return r.meta.Put(store.Sandboxes, rec.ID, rec) }
	sb.changed = func(old, new SandboxRecord) { r.sandboxChanged(sb, old, new) }
	return sb
}

// newContainer makes a container object whose record persists itself
// (store the first version with c.save); it is not a member until
// addContainer.
func (r *registry) newContainer(rec ContainerRecord, cfg *runtimeapi.ContainerConfig) *container {
	c := &container{config: cfg}
	c.rec = rec
	c.save = func(rec ContainerRecord) error { return r.meta.Put(store.Containers, rec.ID, rec) }
	c.changed = func(old, new ContainerRecord) { r.containerChanged(c, old, new) }
	return c
}

// addSandbox makes sb a member (its record is stored already).
func (r *registry) addSandbox(sb *sandbox) {
	r.mu.Lock()
	r.sandboxes[sb.Get().ID] = sb
	r.mu.Unlock()
}

// addContainer makes c a member (its record is stored already).
func (r *registry) addContainer(c *container) {
	r.mu.Lock()
	r.containers[c.Get().ID] = c
	r.mu.Unlock()
}

// removeSandbox deletes sb's record, its membership and its name.
func (r *registry) removeSandbox(sb *sandbox) error {
	rec := sb.Get()
	if err := r.meta.Delete(store.Sandboxes, rec.ID); err != nil {
		return fmt.Errorf("delete record of pod sandbox %s: %w", rec.ID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sandboxes[rec.ID] == sb {
		delete(r.sandboxes, rec.ID)
	}
	if r.names[rec.Name] == rec.ID {
		delete(r.names, rec.Name)
	}
	return nil
}

// removeContainer deletes c's record, its membership and its name.
func (r *registry) removeContainer(c *container) error {
	rec := c.Get()
	if err := r.meta.Delete(store.Containers, rec.ID); err != nil {
		return fmt.Errorf("delete record of container %s: %w", rec.ID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.containers[rec.ID] == c {
		delete(r.containers, rec.ID)
	}
	if r.names[rec.Name] == rec.ID {
		delete(r.names, rec.Name)
	}
	return nil
}

// isContainer reports whether c is still the member with its ID.
func (r *registry) isContainer(c *container) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.containers[c.Get().ID] == c
}

// isSandbox reports whether sb is still the member with its ID.
func (r *registry) isSandbox(sb *sandbox) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sandboxes[sb.Get().ID] == sb
}

// resolve finds a full ID from an ID or a unique prefix of one.
func resolve[T any](m map[string]T, id string) (T, bool) {
	var zero T
	if v, ok := m[id]; ok {
		return v, true
	}
	if len(id) < 6 {
		return zero, false
	}
	var found string
	for k := range m {
		if strings.HasPrefix(k, id) {
			if found != "" {
				return zero, false
			}
			found = k
		}
	}
	if found == "" {
		return zero, false
	}
	return m[found], true
}

func (r *registry) sandbox(id string) (*sandbox, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	sb, ok := resolve(r.sandboxes, id)
	if !ok {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return sb, nil
}

func (r *registry) container(id string) (*container, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := resolve(r.containers, id)
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// listSandboxes returns the sandboxes by ID.
func (r *registry) listSandboxes() []*sandbox {
	r.mu.RLock()
	out := make([]*sandbox, 0, len(r.sandboxes))
	for _, sb := range r.sandboxes {
		out = append(out, sb)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *sandbox) int { return strings.Compare(a.Get().ID, b.Get().ID) })
	return out
}

// listContainers returns the containers by ID.
func (r *registry) listContainers() []*container {
	r.mu.RLock()
	out := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, c)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *container) int { return strings.Compare(a.Get().ID, b.Get().ID) })
	return out
}

// containersOf returns the containers of a sandbox.
func (r *registry) containersOf(sandboxID string) []*container {
	var out []*container
	for _, c := range r.listContainers() {
		if c.Get().SandboxID == sandboxID {
			out = append(out, c)
		}
	}
	return out
}

// diskInUse reports whether any container's root overlay is backed by the
// image disk file with digest d.
func (r *registry) diskInUse(d string) bool {
	for _, c := range r.listContainers() {
		if c.Get().ImageDisk == d {
			return true
		}
	}
	return false
}
