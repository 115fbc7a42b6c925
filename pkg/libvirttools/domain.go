package libvirttools

import (
	"context"
	"time"
)

// DomainState is a domain's run state in vmpod's terms.
type DomainState int

// Domain states. libvirt's blocked/pmsuspended count as Running, its
// shutdown-in-progress as Running until the domain is off, its crashed as
// Crashed.
const (
	DomainUnknown DomainState = iota
	DomainRunning
	DomainPaused
	DomainShutoff
	DomainCrashed
)

func (s DomainState) String() string {
	switch s {
	case DomainRunning:
		return "running"
	case DomainPaused:
		return "paused"
	case DomainShutoff:
		return "shutoff"
	case DomainCrashed:
		return "crashed"
	}
	return "unknown"
}

// ShutoffReason says why a domain is off (libvirt's virDomainShutoffReason).
type ShutoffReason int

// Shutoff reasons.
const (
	ShutoffUnknown   ShutoffReason = iota
	ShutoffShutdown                // the guest powered off (or honoured an ACPI shutdown)
	ShutoffDestroyed               // virDomainDestroy (killed from outside)
	ShutoffCrashed                 // QEMU or the guest crashed
	ShutoffFailed                  // QEMU failed to start
	ShutoffOther                   // migrated, saved, from snapshot, daemon
)

func (r ShutoffReason) String() string {
	return [...]string{"unknown", "shutdown", "destroyed", "crashed", "failed", "other"}[r]
}

// DomainStatus is a domain's state as libvirt reports it now.
type DomainStatus struct {
	Name   string
	UUID   string
	State  DomainState
	Reason ShutoffReason // meaningful when State is DomainShutoff
}

// Domains is the part of libvirt that runs VMs. All domains are persistent
// (defined); vmpod never creates transient domains, so a powered-off guest
// stays visible with its shutoff reason until vmpod undefines it.
//
// Errors wrap errdefs classes: ErrNotFound for a domain that does not exist
// (VIR_ERR_NO_DOMAIN), ErrAlreadyExists when Define meets a name or UUID in
// use by a different domain, ErrFailedPrecondition for an operation invalid
// in the current state (VIR_ERR_OPERATION_INVALID), ErrUnavailable when
// libvirtd cannot be reached or does not answer within the call's
// deadline (then the error also wraps ErrCallTimeout, and the call may
// still take effect later).
type Domains interface {
	// Define defines (or redefines, when name and UUID match an existing
	// domain) a persistent domain from XML and returns its name.
	Define(ctx context.Context, xml string) error
	// Start boots a defined domain; paused leaves its vCPUs stopped.
	Start(ctx context.Context, name string, paused bool) error
	// Resume runs a paused domain.
	Resume(ctx context.Context, name string) error
	// Shutdown asks the guest to power off (ACPI power button) and returns
	// at once.
	Shutdown(ctx context.Context, name string) error
	// Destroy stops the domain at once (kills QEMU). Destroying a domain
	// that is not running succeeds.
	Destroy(ctx context.Context, name string) error
	// Undefine removes the domain definition (and its UEFI NVRAM file).
	// The domain must not be running. Undefining a missing domain succeeds.
	Undefine(ctx context.Context, name string) error
	// Status returns the domain's state now.
	Status(ctx context.Context, name string) (DomainStatus, error)
	// List returns the status of every domain whose name starts with prefix,
	// in one libvirt call.
	List(ctx context.Context, prefix string) ([]DomainStatus, error)
	// XML returns the domain's live XML (inactive XML when not running).
	XML(ctx context.Context, name string) (string, error)
	// SetCPUTune changes <cputune> shares/period/quota of a running domain
	// live and in its definition; zero values are left unchanged.
	SetCPUTune(ctx context.Context, name string, shares uint64, periodUS uint64, quotaUS int64) error
	// WaitShutoff blocks until the domain is off or timeout passes, and
	// reports whether it is off.
	WaitShutoff(ctx context.Context, name string, timeout time.Duration) (bool, error)
	// Stats returns the resource usage of the named domains only, in one
	// libvirt stats call that waits on no busy domain; a name that is not
	// defined is left out of the result.
	Stats(ctx context.Context, names []string) ([]DomainStats, error)
	// AgentCommand sends one QEMU guest agent command (a JSON document such
	// as {"execute":"guest-ping"}) and returns the agent's JSON reply. It
	// fails with ErrFailedPrecondition when the domain has no agent
	// channel or the agent does not answer within timeout.
	AgentCommand(ctx context.Context, name, command string, timeout time.Duration) (string, error)
	// Save writes a running domain's memory and device state to path (a
	// libvirt save image, see SaveImage) and stops it: the domain is then
	// shut off with reason "saved". timeout bounds the call (0: twice the
	// call timeout).
	Save(ctx context.Context, name, path string, timeout time.Duration) error
	// Restore starts the domain a save image at path describes, with the
	// memory and device state it holds; paused leaves its vCPUs stopped.
	// The image's own definition is used (see SaveImage to change it).
	Restore(ctx context.Context, path string, paused bool, timeout time.Duration) error
}

// DomainStats is a domain's resource usage.
type DomainStats struct {
	Name string
	// Running says the domain runs (or is paused): QEMU is there.
	Running bool
	// HasCPU and HasMemory say the CPU and the memory figures came; a
	// domain busy with a job may come without them.
	HasCPU, HasMemory bool
	// CPUTimeNs is the CPU time QEMU used for the guest, in nanoseconds.
	CPUTimeNs uint64
	// MemoryBytes is the guest's current memory (the balloon's size).
	MemoryBytes uint64
	// MemoryRSSBytes is QEMU's resident memory on the host.
	MemoryRSSBytes uint64
	// MemoryUsableBytes is what the guest reports as available to it
	// (balloon driver stats; 0 when the guest does not report).
	MemoryUsableBytes uint64
}
