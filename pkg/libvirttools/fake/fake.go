// Package fake is an in-memory libvirttools.Connection for unit tests. It
// keeps domains defined from XML, enforces libvirt's unique names and
// UUIDs and its state transitions, records calls, publishes the events
// libvirt would on each transition, and has hooks to simulate what the
// guest or libvirtd does on its own: power off, crash, ignore ACPI,
// connect the guest agent, fail a call, go down, hang.
package fake

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/broadcast"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// A fake domain moves between the states of a persistent libvirt domain:
//
//	(none) --Define--> Shutoff --Undefine--> (none)
//	                   |  |  ^
//	     Start(paused) |  |  |  Destroy: reason destroyed
//	                   v  |  |  GuestPowerOff: reason shutdown
//	              Paused  |  |  Crash: reason crashed
//	                   |  |  |    (each from Paused or Running)
//	            Resume |  |  |  Shutdown: reason shutdown
//	                   v  v  |    (from Running; none after SetIgnoreACPI)
//	              Running ---+
//	          (the middle arrow is Start)
//
// Start needs Shutoff, Resume needs Paused, Shutdown needs Running and
// Undefine needs Shutoff; otherwise the call fails with
// errdefs.ErrFailedPrecondition. Destroy of a shut-off domain and
// Undefine of a missing one succeed.
//
// Every state change publishes the libvirttools.DomainEvent libvirt would
// (a paused start: running, then paused), except while the fake is down:
// like a real outage, those are lost, and coming back up publishes
// EventConnected.
//
// Calls run as the real ones do, through libvirttools.Calls with the call
// timeout (SetCallTimeout): a call hung with Hang returns ErrUnavailable at
// its deadline and finishes, taking effect, when released.

// Connection is a fake libvirttools.Connection. It is safe for concurrent
// use.
type Connection struct {
	mu         sync.Mutex
	down       bool
	calls      []string
	domains    map[string]*domain // by name
	ignoreACPI map[string]bool    // by name, kept across Define/Undefine
	failNext   map[string][]error // by method, in order
	holds      map[string]*hold   // by method: the next call waits
	// owner is what QEMUOwner reports: by default the test process's own
	// user and group, so tests can hand files to "QEMU" without root.
	owner libvirttools.Owner
	// pids are what QEMUPID reports, by domain name (SetQEMUPID); seq
	// numbers the domains defined.
	pids map[string]int
	seq  int
	// agent answers AgentCommand for a domain; nil means no agent channel.
	agent   func(name, command string) (string, error)
	changed chan struct{} // closed and replaced on every state change
	events  *broadcast.Broadcaster[libvirttools.Event]
	runner  libvirttools.Calls
	timeout time.Duration            // the call timeout
	hung    map[string]chan struct{} // by method: calls wait for it to close
	waiting map[string]int           // by method: calls waiting for Hang's release
	// busy domains are in a job: Stats gives their state only (SetBusy).
	busy map[string]bool
}

// domain is one defined domain.
type domain struct {
	name   string
	uuid   string // lower case, 8-4-4-4-12
	config string // the persistent definition
	live   string // the running definition; "" when shut off
	state  libvirttools.DomainState
	reason libvirttools.ShutoffReason
	seq    int // in the order domains were defined
}

func (d *domain) active() bool { return d.state != libvirttools.DomainShutoff }

func (d *domain) status() libvirttools.DomainStatus {
	return libvirttools.DomainStatus{Name: d.name, UUID: d.uuid, State: d.state, Reason: d.reason}
}

var _ libvirttools.Connection = (*Connection)(nil)

// methods are the names FailNext accepts.
var methods = []string{
	"Define", "Start", "Resume", "Shutdown", "Destroy", "Undefine", "Status",
	"List", "XML", "SetCPUTune", "WaitShutoff", "Ping", "AgentCommand", "Stats",
	"Save", "Restore",
}

// New returns a fake connection that is up and has no domains.
func New() *Connection {
	return &Connection{
		domains:    map[string]*domain{},
		ignoreACPI: map[string]bool{},
		failNext:   map[string][]error{},
		changed:    make(chan struct{}),
		owner:      libvirttools.Owner{UID: os.Getuid(), GID: os.Getgid()},
		events:     broadcast.New[libvirttools.Event](1024, "libvirt event"),
		timeout:    libvirttools.DefaultCallTimeout,
		hung:       map[string]chan struct{}{},
		waiting:    map[string]int{},
	}
}

// SetCallTimeout sets the deadline of every call (default
// libvirttools.DefaultCallTimeout); AgentCommand gets its own timeout on
// top, like the real one.
func (c *Connection) SetCallTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// Hang makes every later call of method (a Connection method name, as for
// FailNext) block, ignoring its context as a cgo call does, until release
// is called; the caller gets ErrUnavailable at the call's deadline and the
// call then finishes in the background. It panics on an unknown method.
func (c *Connection) Hang(method string) (release func()) {
	if !slices.Contains(methods, method) {
		panic(fmt.Sprintf("fake: Hang: no method %q", method))
	}
	gate := make(chan struct{})
	c.mu.Lock()
	c.hung[method] = gate
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.hung[method] == gate {
				delete(c.hung, method)
			}
			c.mu.Unlock()
			close(gate)
		})
	}
}

// Waiting is how many calls of method are blocked by Hang now.
func (c *Connection) Waiting(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting[method]
}

// Abandoned is how many calls are still running after their deadline.
func (c *Connection) Abandoned() int { return c.runner.Abandoned() }

// run runs body as a libvirt call of method: through c.runner with the call
// timeout plus extra, after waiting for Hang's release.
func (c *Connection) run(ctx context.Context, method string, extra time.Duration, body func() error) error {
	c.mu.Lock()
	gate, timeout := c.hung[method], c.timeout
	c.mu.Unlock()
	return c.runner.Run(ctx, method, timeout+extra, func() error {
		if gate != nil {
			c.mu.Lock()
			c.waiting[method]++
			c.mu.Unlock()
			<-gate
			c.mu.Lock()
			c.waiting[method]--
			c.mu.Unlock()
		}
		return body()
	})
}

// result is run for a method with a result, which the caller gets only
// when the call returned in time (a late one must not race with it).
func result[T any](ctx context.Context, c *Connection, method string, extra time.Duration, body func() (T, error)) (T, error) {
	var out T
	err := c.run(ctx, method, extra, func() error {
		v, err := body()
		out = v
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// Subscribe implements libvirttools.Events.
func (c *Connection) Subscribe() (*libvirttools.EventSubscription, error) {
	return c.events.Subscribe()
}

// Subscribers counts the event subscriptions.
func (c *Connection) Subscribers() int { return c.events.Count() }

// Close implements libvirttools.Connection: it ends the subscriptions.
func (c *Connection) Close() error {
	c.events.Close()
	return nil
}

// AgentConnect simulates the guest agent of the domain called name
// connecting to (true) or leaving (false) its channel: it publishes the
// AgentEvent (unless the fake is down).
func (c *Connection) AgentConnect(name string, connected bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down {
		c.events.Publish(libvirttools.Event{Kind: libvirttools.EventAgent, Agent: libvirttools.AgentEvent{Name: name, Connected: connected}})
	}
}

// SetDown makes every call fail at once as if libvirtd had been
// unreachable for long (errdefs.ErrUnavailable), or back up when down is
// false, which publishes EventConnected. Domains are kept; state changes
// while down publish no events; WaitShutoff keeps waiting through the
// outage, like the real one.
func (c *Connection) SetDown(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down && !down {
		c.events.Publish(libvirttools.Event{Kind: libvirttools.EventConnected})
	}
	c.down = down
	c.notifyLocked()
}

// Calls returns the calls made so far, failed ones included, e.g.
// "Define vmpod-x", "Start vmpod-x paused", "List vmpod-".
func (c *Connection) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// FailNext makes the next call of method (a Connection method name such
// as "Start") return err without doing anything. Several calls queue up.
// It panics on a method name Connection does not have.
func (c *Connection) FailNext(method string, err error) {
	if !slices.Contains(methods, method) {
		panic(fmt.Sprintf("fake: FailNext: no method %q", method))
	}
	c.mu.Lock()
	c.failNext[method] = append(c.failNext[method], err)
	c.mu.Unlock()
}

// SetIgnoreACPI makes the guest of the domain called name ignore (true) or
// obey (false, the default) Shutdown. It may be set before the domain is
// defined and outlives Undefine.
func (c *Connection) SetIgnoreACPI(name string, ignore bool) {
	c.mu.Lock()
	c.ignoreACPI[name] = ignore
	c.mu.Unlock()
}

// GuestPowerOff simulates the guest powering itself off: the domain goes
// shut off with reason ShutoffShutdown. It panics unless the domain is
// defined and running or paused.
func (c *Connection) GuestPowerOff(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(c.activeForHook("GuestPowerOff", name), libvirttools.ShutoffShutdown)
}

// Crash simulates QEMU or the guest crashing with on_crash=destroy: the
// domain goes shut off with reason ShutoffCrashed. It panics unless the
// domain is defined and running or paused.
func (c *Connection) Crash(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(c.activeForHook("Crash", name), libvirttools.ShutoffCrashed)
}

// Domain returns the persistent definition and the state of the domain
// called name, and whether it is defined.
func (c *Connection) Domain(name string) (xml string, state libvirttools.DomainStatus, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.domains[name]
	if !ok {
		return "", libvirttools.DomainStatus{}, false
	}
	return d.config, d.status(), true
}

func (c *Connection) activeForHook(hook, name string) *domain {
	d, ok := c.domains[name]
	if !ok {
		panic(fmt.Sprintf("fake: %s: no domain %q", hook, name))
	}
	if !d.active() {
		panic(fmt.Sprintf("fake: %s: domain %q is shut off", hook, name))
	}
	return d
}

// begin records call (method and arguments) and returns the error it
// must fail with: down, an injected failure, or a done ctx. c.mu must be
// held.
func (c *Connection) begin(ctx context.Context, method string, args ...string) error {
	call := method
	for _, a := range args {
		if a != "" {
			call += " " + a
		}
	}
	c.calls = append(c.calls, call)
	if c.down {
		return fmt.Errorf("%s: fake libvirt is down: %w", method, errdefs.ErrUnavailable)
	}
	if q := c.failNext[method]; len(q) > 0 {
		c.failNext[method] = q[1:]
		return q[0]
	}
	return ctx.Err()
}

// lookupLocked returns the domain called name or a NotFound error for op.
func (c *Connection) lookupLocked(op, name string) (*domain, error) {
	d, ok := c.domains[name]
	if !ok {
		return nil, fmt.Errorf("%s %q: no domain with matching name: %w", op, name, errdefs.ErrNotFound)
	}
	return d, nil
}

// setStateLocked changes d's state, publishes its event and wakes
// WaitShutoff callers.
func (c *Connection) setStateLocked(d *domain, state libvirttools.DomainState, reason libvirttools.ShutoffReason) {
	d.state, d.reason = state, reason
	ev := libvirttools.DomainEvent{Name: d.name, State: state}
	switch state {
	case libvirttools.DomainRunning:
		ev.Detail = "started or resumed"
	case libvirttools.DomainPaused:
		ev.Detail = "suspended"
	case libvirttools.DomainShutoff:
		ev.Reason, ev.Detail = reason, "stopped/"+reason.String()
	}
	c.publishLocked(ev)
	c.notifyLocked()
}

// publishLocked publishes a domain event unless the fake is down.
func (c *Connection) publishLocked(ev libvirttools.DomainEvent) {
	if !c.down {
		c.events.Publish(libvirttools.Event{Kind: libvirttools.EventDomain, Domain: ev})
	}
}

// notifyLocked wakes WaitShutoff callers.
func (c *Connection) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// stopLocked shuts d off for reason; its live definition is dropped.
func (c *Connection) stopLocked(d *domain, reason libvirttools.ShutoffReason) {
	d.live = ""
	c.setStateLocked(d, libvirttools.DomainShutoff, reason)
}

// SetBusy marks a domain as in a job (true) or not: Stats then gives its
// state without CPU and memory figures.
func (c *Connection) SetBusy(name string, busy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == nil {
		c.busy = map[string]bool{}
	}
	c.busy[name] = busy
}
