package fake

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// The libvirttools.Connection methods, each a state transition of the
// diagram in fake.go or a read.

// Define implements libvirttools.Domains.
func (c *Connection) Define(ctx context.Context, xml string) error {
	c.pause("Define")
	return c.run(ctx, "Define", 0, func() error {
		var def libvirtxml.Domain
		parseErr := def.Unmarshal(xml)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Define", def.Name); err != nil {
			return err
		}
		if parseErr != nil {
			return fmt.Errorf("define domain: XML error: %v: %w", parseErr, errdefs.ErrInvalidArgument)
		}
		uuid, ok := canonicalUUID(def.UUID)
		switch {
		case def.Name == "":
			return fmt.Errorf("define domain: missing domain name: %w", errdefs.ErrInvalidArgument)
		case def.Type == "":
			return fmt.Errorf("define domain %q: missing domain type: %w", def.Name, errdefs.ErrInvalidArgument)
		case !ok:
			return fmt.Errorf("define domain %q: missing or malformed uuid %q: %w", def.Name, def.UUID, errdefs.ErrInvalidArgument)
		}
		if d, ok := c.domains[def.Name]; ok {
			if d.uuid != uuid {
				return fmt.Errorf("define domain: domain %q already exists with uuid %s: %w", d.name, d.uuid, errdefs.ErrAlreadyExists)
			}
			d.config = xml // redefine; a running domain keeps its live definition
			return nil
		}
		for _, d := range c.domains {
			if d.uuid == uuid {
				return fmt.Errorf("define domain: domain %q is already defined with uuid %s: %w", d.name, d.uuid, errdefs.ErrAlreadyExists)
			}
		}
		c.seq++
		c.domains[def.Name] = &domain{
			name: def.Name, uuid: uuid, config: xml, seq: c.seq,
			state: libvirttools.DomainShutoff, reason: libvirttools.ShutoffUnknown,
		}
		return nil
	})
}

// Start implements libvirttools.Domains.
func (c *Connection) Start(ctx context.Context, name string, paused bool) error {
	return c.run(ctx, "Start", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		args := []string{name}
		if paused {
			args = append(args, "paused")
		}
		if err := c.begin(ctx, "Start", args...); err != nil {
			return err
		}
		d, err := c.lookupLocked("start domain", name)
		if err != nil {
			return err
		}
		if d.active() {
			return fmt.Errorf("start domain %q: domain is already running: %w", name, errdefs.ErrFailedPrecondition)
		}
		d.live = d.config
		state := libvirttools.DomainRunning
		if paused {
			state = libvirttools.DomainPaused
		}
		if paused {
			// libvirt reports a paused start as started, then suspended.
			c.publishLocked(libvirttools.DomainEvent{Name: name, State: libvirttools.DomainRunning, Detail: "started"})
		}
		c.setStateLocked(d, state, libvirttools.ShutoffUnknown)
		return nil
	})
}

// Resume implements libvirttools.Domains. Like libvirt 9.0 ("domain is
// already running") it fails unless the domain is paused.
func (c *Connection) Resume(ctx context.Context, name string) error {
	return c.run(ctx, "Resume", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Resume", name); err != nil {
			return err
		}
		d, err := c.lookupLocked("resume domain", name)
		if err != nil {
			return err
		}
		if d.state != libvirttools.DomainPaused {
			return fmt.Errorf("resume domain %q: domain is %s, not paused: %w", name, d.state, errdefs.ErrFailedPrecondition)
		}
		c.setStateLocked(d, libvirttools.DomainRunning, libvirttools.ShutoffUnknown)
		return nil
	})
}

// Shutdown implements libvirttools.Domains. The guest obeys at once
// unless SetIgnoreACPI was set for the domain.
func (c *Connection) Shutdown(ctx context.Context, name string) error {
	return c.run(ctx, "Shutdown", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Shutdown", name); err != nil {
			return err
		}
		d, err := c.lookupLocked("shut down domain", name)
		if err != nil {
			return err
		}
		if d.state != libvirttools.DomainRunning {
			return fmt.Errorf("shut down domain %q: domain is %s, not running: %w", name, d.state, errdefs.ErrFailedPrecondition)
		}
		if !c.ignoreACPI[name] {
			c.stopLocked(d, libvirttools.ShutoffShutdown)
		}
		return nil
	})
}

// Destroy implements libvirttools.Domains.
func (c *Connection) Destroy(ctx context.Context, name string) error {
	return c.run(ctx, "Destroy", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Destroy", name); err != nil {
			return err
		}
		d, err := c.lookupLocked("destroy domain", name)
		if err != nil {
			return err
		}
		if d.active() {
			c.stopLocked(d, libvirttools.ShutoffDestroyed)
		}
		return nil
	})
}

// Undefine implements libvirttools.Domains.
func (c *Connection) Undefine(ctx context.Context, name string) error {
	return c.run(ctx, "Undefine", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Undefine", name); err != nil {
			return err
		}
		d, ok := c.domains[name]
		if !ok {
			return nil
		}
		if d.active() {
			return fmt.Errorf("undefine domain %q: domain is %s, not shut off: %w", name, d.state, errdefs.ErrFailedPrecondition)
		}
		delete(c.domains, name)
		c.notifyLocked() // WaitShutoff callers see NotFound
		return nil
	})
}

// Status implements libvirttools.Domains.
func (c *Connection) Status(ctx context.Context, name string) (libvirttools.DomainStatus, error) {
	return result(ctx, c, "Status", 0, func() (libvirttools.DomainStatus, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Status", name); err != nil {
			return libvirttools.DomainStatus{}, err
		}
		d, err := c.lookupLocked("get state of domain", name)
		if err != nil {
			return libvirttools.DomainStatus{}, err
		}
		return d.status(), nil
	})
}

// List implements libvirttools.Domains. Domains come sorted by name.
func (c *Connection) List(ctx context.Context, prefix string) ([]libvirttools.DomainStatus, error) {
	return result(ctx, c, "List", 0, func() ([]libvirttools.DomainStatus, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "List", prefix); err != nil {
			return nil, err
		}
		var out []libvirttools.DomainStatus
		for _, name := range slices.Sorted(maps.Keys(c.domains)) {
			if strings.HasPrefix(name, prefix) {
				out = append(out, c.domains[name].status())
			}
		}
		return out, nil
	})
}

// XML implements libvirttools.Domains.
func (c *Connection) XML(ctx context.Context, name string) (string, error) {
	return result(ctx, c, "XML", 0, func() (string, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "XML", name); err != nil {
			return "", err
		}
		d, err := c.lookupLocked("get XML of domain", name)
		if err != nil {
			return "", err
		}
		if d.active() {
			return d.live, nil
		}
		return d.config, nil
	})
}

// SetCPUTune implements libvirttools.Domains. It rewrites <cputune>
// <shares>, <global_period> and <global_quota> in the definition and,
// when the domain runs, in the live definition.
func (c *Connection) SetCPUTune(ctx context.Context, name string, shares uint64, periodUS uint64, quotaUS int64) error {
	return c.run(ctx, "SetCPUTune", 0, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "SetCPUTune", name, fmt.Sprintf("shares=%d period=%d quota=%d", shares, periodUS, quotaUS)); err != nil {
			return err
		}
		d, err := c.lookupLocked("set CPU tuning of domain", name)
		if err != nil {
			return err
		}
		if shares == 0 && periodUS == 0 && quotaUS == 0 {
			return nil
		}
		config, err := setCPUTune(d.config, shares, periodUS, quotaUS)
		if err != nil {
			return fmt.Errorf("set CPU tuning of domain %q: %w", name, err)
		}
		live := d.live
		if d.active() {
			if live, err = setCPUTune(d.live, shares, periodUS, quotaUS); err != nil {
				return fmt.Errorf("set CPU tuning of domain %q: %w", name, err)
			}
		}
		d.config, d.live = config, live
		return nil
	})
}

func setCPUTune(doc string, shares uint64, periodUS uint64, quotaUS int64) (string, error) {
	var def libvirtxml.Domain
	if err := def.Unmarshal(doc); err != nil {
		return "", err
	}
	if def.CPUTune == nil {
		def.CPUTune = &libvirtxml.DomainCPUTune{}
	}
	if shares != 0 {
		def.CPUTune.Shares = &libvirtxml.DomainCPUTuneShares{Value: uint(shares)}
	}
	if periodUS != 0 {
		def.CPUTune.GlobalPeriod = &libvirtxml.DomainCPUTunePeriod{Value: periodUS}
	}
	if quotaUS != 0 {
		def.CPUTune.GlobalQuota = &libvirtxml.DomainCPUTuneQuota{Value: quotaUS}
	}
	return def.Marshal()
}

// WaitShutoff implements libvirttools.Domains. It wakes on every state
// change instead of polling. While the fake is down it keeps waiting and
// returns the ErrUnavailable error only if the timeout passes so.
func (c *Connection) WaitShutoff(ctx context.Context, name string, timeout time.Duration) (bool, error) {
	c.mu.Lock()
	err := c.begin(ctx, "WaitShutoff", name, timeout.String())
	down := c.down
	c.mu.Unlock()
	if err != nil && !down {
		return false, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		var d *domain
		if c.down {
			err = fmt.Errorf("WaitShutoff: fake libvirt is down: %w", errdefs.ErrUnavailable)
		} else if d, err = c.lookupLocked("get state of domain", name); err != nil {
			c.mu.Unlock()
			return false, err
		} else if !d.active() {
			c.mu.Unlock()
			return true, nil
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("wait for domain %q to shut off: %w", name, ctx.Err())
		case <-deadline.C:
			return false, err
		case <-changed:
		}
	}
}

// Ping implements libvirttools.Connection.
func (c *Connection) Ping(ctx context.Context) (libvirttools.Info, error) {
	return result(ctx, c, "Ping", 0, func() (libvirttools.Info, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Ping"); err != nil {
			return libvirttools.Info{}, err
		}
		return libvirttools.Info{URI: "test:///fake", LibvirtVersion: "9.0.0", Hypervisor: "QEMU"}, nil
	})
}

// canonicalUUID returns s, which may lack dashes, in lower-case 8-4-4-4-12
// form, and whether it is a UUID at all.
func canonicalUUID(s string) (string, bool) {
	hex := strings.ToLower(strings.ReplaceAll(s, "-", ""))
	if len(hex) != 32 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", false
	}
	return hex[:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:], true
}

// SetAgent installs the fake guest agent: f answers every AgentCommand
// (for a running domain). Without one, AgentCommand fails as libvirt does
// for a domain without an agent channel.
func (c *Connection) SetAgent(f func(name, command string) (string, error)) {
	c.mu.Lock()
	c.agent = f
	c.mu.Unlock()
}

// AgentCommand implements libvirttools.Domains.
// Like the real one, its deadline is the call timeout plus timeout, and
// it returns when ctx ends even if the agent function has not.
func (c *Connection) AgentCommand(ctx context.Context, name, command string, timeout time.Duration) (string, error) {
	return result(ctx, c, "AgentCommand", timeout, func() (string, error) {
		c.mu.Lock()
		if err := c.begin(ctx, "AgentCommand", name); err != nil {
			c.mu.Unlock()
			return "", err
		}
		d, err := c.lookupLocked("guest agent command on domain", name)
		if err != nil {
			c.mu.Unlock()
			return "", err
		}
		if d.status().State != libvirttools.DomainRunning {
			c.mu.Unlock()
			return "", fmt.Errorf("guest agent command on domain %q: domain is not running: %w", name, errdefs.ErrFailedPrecondition)
		}
		agent := c.agent
		c.mu.Unlock()
		if agent == nil {
			return "", fmt.Errorf("guest agent command on domain %q: QEMU guest agent is not configured: %w", name, errdefs.ErrFailedPrecondition)
		}
		return agent(name, command)
	})
}

// Stats implements libvirttools.Domains for the named domains only: a
// running one gets fixed, recognisable figures (CPU 1 s, 256 MiB current,
// 300 MiB RSS, 200 MiB usable), a busy one (SetBusy) its state only, as
// libvirt's NOWAIT does, and a name not defined is left out. The call is
// recorded as "Stats" and the names.
func (c *Connection) Stats(ctx context.Context, names []string) ([]libvirttools.DomainStats, error) {
	return result(ctx, c, "Stats", 0, func() ([]libvirttools.DomainStats, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.begin(ctx, "Stats", names...); err != nil {
			return nil, err
		}
		var out []libvirttools.DomainStats
		for _, name := range names {
			d, ok := c.domains[name]
			if !ok {
				continue
			}
			st := d.status().State
			ds := libvirttools.DomainStats{Name: name, Running: st == libvirttools.DomainRunning || st == libvirttools.DomainPaused}
			if ds.Running && !c.busy[name] {
				ds.HasCPU, ds.HasMemory = true, true
				ds.CPUTimeNs, ds.MemoryBytes, ds.MemoryRSSBytes, ds.MemoryUsableBytes = 1e9, 256<<20, 300<<20, 200<<20
			}
			out = append(out, ds)
		}
		return out, nil
	})
}

// HoldNext makes the next call of method (Define only, for now) wait
// before it does anything; entered is closed when it waits, release lets
// it go on. Tests use it to run something else in the middle of an
// operation.
func (c *Connection) HoldNext(method string) (entered <-chan struct{}, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &hold{entered: make(chan struct{}), release: make(chan struct{})}
	if c.holds == nil {
		c.holds = map[string]*hold{}
	}
	c.holds[method] = h
	var once sync.Once
	return h.entered, func() { once.Do(func() { close(h.release) }) }
}

type hold struct{ entered, release chan struct{} }

// pause waits while method is held (HoldNext), once.
func (c *Connection) pause(method string) {
	c.mu.Lock()
	h := c.holds[method]
	delete(c.holds, method)
	c.mu.Unlock()
	if h != nil {
		close(h.entered)
		<-h.release
	}
}
