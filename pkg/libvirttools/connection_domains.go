package libvirttools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// The Domains methods of Libvirt: one libvirt call each (or a few), made
// by do (connection_call.go) with a deadline, a retry where it is safe and
// libvirt's errors translated.

// statusPollInterval is how often WaitShutoff asks libvirt for the state.
const statusPollInterval = 150 * time.Millisecond

// undefineFlags are tried in order until libvirt accepts one: older
// daemons reject flags they do not know with VIR_ERR_INVALID_ARG
// ("unsupported flags"). libvirt refuses to undefine a UEFI domain without
// the NVRAM flag, which the last set lacks: that error is then reported.
var undefineFlags = []libvirt.DomainUndefineFlagsValues{
	libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE |
		libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
	libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE |
		libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
	0,
}

// Define implements Domains.
func (l *Libvirt) Define(ctx context.Context, xml string) error {
	return l.do(ctx, "define domain", l.timeout, retrySafe, func(c *libvirt.Connect) error {
		dom, err := c.DomainDefineXML(xml)
		if err != nil {
			return err
		}
		dom.Free()
		return nil
	})
}

// Start implements Domains. When the connection broke under it, the
// domain's state says whether it started.
func (l *Libvirt) Start(ctx context.Context, name string, paused bool) error {
	flags := libvirt.DOMAIN_NONE
	if paused {
		flags = libvirt.DOMAIN_START_PAUSED
	}
	start := func() error {
		return l.withDomain(ctx, "start domain", name, l.slowTimeout(), 0, func(dom *libvirt.Domain) error {
			return dom.CreateWithFlags(flags)
		})
	}
	err := start()
	if !isLost(err) {
		return err
	}
	st, serr := l.Status(ctx, name)
	switch {
	case serr != nil:
		return err
	case st.State != DomainShutoff:
		return nil
	}
	return start()
}

// Resume implements Domains. When the connection broke under it, the
// domain's state says whether it resumed.
func (l *Libvirt) Resume(ctx context.Context, name string) error {
	resume := func() error {
		return l.withDomain(ctx, "resume domain", name, l.timeout, 0, func(dom *libvirt.Domain) error {
			return dom.Resume()
		})
	}
	err := resume()
	if !isLost(err) {
		return err
	}
	st, serr := l.Status(ctx, name)
	switch {
	case serr != nil:
		return err
	case st.State == DomainRunning:
		return nil
	case st.State != DomainPaused:
		return err
	}
	return resume()
}

// Shutdown implements Domains.
func (l *Libvirt) Shutdown(ctx context.Context, name string) error {
	return l.withDomain(ctx, "shut down domain", name, l.timeout, retrySafe, func(dom *libvirt.Domain) error {
		return dom.Shutdown()
	})
}

// Destroy implements Domains.
func (l *Libvirt) Destroy(ctx context.Context, name string) error {
	return l.withDomain(ctx, "destroy domain", name, l.slowTimeout(), retrySafe, func(dom *libvirt.Domain) error {
		err := dom.Destroy()
		if hasCode(err, libvirt.ERR_OPERATION_INVALID) {
			// "domain is not running", unless the check below says otherwise.
			if active, aerr := dom.IsActive(); aerr == nil && !active {
				return nil
			}
		}
		return err
	})
}

// Undefine implements Domains.
func (l *Libvirt) Undefine(ctx context.Context, name string) error {
	err := l.withDomain(ctx, "undefine domain", name, l.timeout, retrySafe, func(dom *libvirt.Domain) error {
		// libvirt undefines a running domain by making it transient, which
		// vmpod never wants (it would vanish without a shutoff reason).
		state, reason, err := dom.GetState()
		if err != nil {
			return err
		}
		if st, _ := statusFromState(state, reason); st != DomainShutoff {
			return fmt.Errorf("domain is %s, not shut off: %w", st, errdefs.ErrFailedPrecondition)
		}
		for _, flags := range undefineFlags {
			err = dom.UndefineFlags(flags)
			if !hasCode(err, libvirt.ERR_INVALID_ARG) && !hasCode(err, libvirt.ERR_NO_SUPPORT) {
				break
			}
		}
		return err
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// Status implements Domains.
func (l *Libvirt) Status(ctx context.Context, name string) (DomainStatus, error) {
	var st DomainStatus
	err := l.withDomain(ctx, "get state of domain", name, l.timeout, retrySafe, func(dom *libvirt.Domain) error {
		state, reason, err := dom.GetState()
		if err != nil {
			return err
		}
		uuid, err := dom.GetUUIDString() // local, no RPC
		if err != nil {
			return err
		}
		st = DomainStatus{Name: name, UUID: uuid}
		st.State, st.Reason = statusFromState(state, reason)
		return nil
	})
	if err != nil {
		// st is not read: a call past its deadline may still set it.
		return DomainStatus{}, err
	}
	return st, nil
}

// domainStats makes one virConnectGetAllDomainStats call and returns fn of
// every returned domain whose name starts with prefix (names and UUIDs of
// the returned handles are read locally, without further RPCs). It frees
// the handles.
func domainStats[T any](ctx context.Context, l *Libvirt, op string, types libvirt.DomainStatsTypes,
	flags libvirt.ConnectGetAllDomainStatsFlags, prefix string, fn func(name string, dom *libvirt.Domain, s *libvirt.DomainStats) (T, error)) ([]T, error) {
	var out []T
	err := l.do(ctx, op, l.timeout, retrySafe, func(c *libvirt.Connect) error {
		stats, err := c.GetAllDomainStats(nil, types, flags)
		if err != nil {
			return err
		}
		defer func() {
			for _, s := range stats {
				s.Domain.Free()
			}
		}()
		var got []T // this attempt's: a retry starts afresh
		for i := range stats {
			s := &stats[i]
			name, err := s.Domain.GetName()
			if err != nil {
				return err
			}
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			v, err := fn(name, s.Domain, s)
			if err != nil {
				return err
			}
			got = append(got, v)
		}
		out = got
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// List implements Domains. It makes one RPC,
// virConnectGetAllDomainStats(VIR_DOMAIN_STATS_STATE), which returns the
// state and reason of every domain, running or not.
func (l *Libvirt) List(ctx context.Context, prefix string) ([]DomainStatus, error) {
	return domainStats(ctx, l, "list domains", libvirt.DOMAIN_STATS_STATE, 0, prefix,
		func(name string, dom *libvirt.Domain, s *libvirt.DomainStats) (DomainStatus, error) {
			uuid, err := dom.GetUUIDString()
			if err != nil {
				return DomainStatus{}, err
			}
			st := DomainStatus{Name: name, UUID: uuid}
			if s.State != nil && s.State.StateSet {
				st.State, st.Reason = statusFromState(s.State.State, s.State.Reason)
			}
			return st, nil
		})
}

// statsGroups are the statistic groups vmpod reads: the state (so a VM
// that stopped is told apart), QEMU's CPU time and the balloon's memory
// figures. Block, vCPU, interface and perf groups are not asked for.
const statsGroups = libvirt.DOMAIN_STATS_STATE | libvirt.DOMAIN_STATS_CPU_TOTAL | libvirt.DOMAIN_STATS_BALLOON

// Stats implements Domains: it looks up the named domains (a name that is
// not defined is left out) and asks for their statistics with one
// virDomainListGetStats call, with VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
// so that a domain busy with a job gets only the figures that need no job
// (HasCPU/HasMemory say which came) instead of making the call wait.
func (l *Libvirt) Stats(ctx context.Context, names []string) ([]DomainStats, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var out []DomainStats
	err := l.do(ctx, "domain stats", l.timeout, retrySafe, func(c *libvirt.Connect) error {
		doms := make([]*libvirt.Domain, 0, len(names))
		defer func() {
			for _, d := range doms {
				d.Free()
			}
		}()
		for _, name := range names {
			dom, err := c.LookupDomainByName(name)
			if err != nil {
				if isNoDomain(err) {
					continue
				}
				return err
			}
			doms = append(doms, dom)
		}
		if len(doms) == 0 {
			out = nil
			return nil
		}
		stats, err := c.GetAllDomainStats(doms, statsGroups, libvirt.CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
		if err != nil {
			return err
		}
		defer func() {
			for _, s := range stats {
				s.Domain.Free()
			}
		}()
		got := make([]DomainStats, 0, len(stats)) // this attempt's
		for i := range stats {
			name, err := stats[i].Domain.GetName()
			if err != nil {
				return err
			}
			got = append(got, statsOf(name, &stats[i]))
		}
		out = got
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// statsOf maps one domain's libvirt statistics to vmpod's.
func statsOf(name string, s *libvirt.DomainStats) DomainStats {
	d := DomainStats{Name: name}
	if s.State != nil && s.State.StateSet {
		st, _ := statusFromState(s.State.State, s.State.Reason)
		d.Running = st == DomainRunning || st == DomainPaused
	}
	if s.Cpu != nil && s.Cpu.TimeSet {
		d.CPUTimeNs, d.HasCPU = s.Cpu.Time, true
	}
	if b := s.Balloon; b != nil {
		if b.CurrentSet {
			d.MemoryBytes, d.HasMemory = b.Current<<10, true
		}
		if b.RssSet {
			d.MemoryRSSBytes, d.HasMemory = b.Rss<<10, true
		}
		if b.UsableSet {
			d.MemoryUsableBytes = b.Usable << 10
		}
	}
	return d
}

// XML implements Domains.
func (l *Libvirt) XML(ctx context.Context, name string) (string, error) {
	var doc string
	err := l.withDomain(ctx, "get XML of domain", name, l.timeout, retrySafe, func(dom *libvirt.Domain) error {
		var err error
		doc, err = dom.GetXMLDesc(0)
		return err
	})
	if err != nil {
		return "", err
	}
	return doc, nil
}

// AgentCommand implements Domains. libvirt waits up to timeout (whole
// seconds, at least one) for the agent; the call's deadline is that plus
// the call timeout, and ctx ending returns at once (the command may still
// run). It is not retried when the connection breaks under it (see
// connection_call.go), with one exception: after libvirtd restarts, it
// connects to each guest agent again a moment after it answers calls, and
// until then refuses agent commands ("QEMU guest agent is not connected")
// without sending them. Within agentReconnectWindow of a reconnection,
// such a refusal is retried every reconnectRetry until the deadline, so
// that a restart does not fail an exec.
func (l *Libvirt) AgentCommand(ctx context.Context, name, command string, timeout time.Duration) (string, error) {
	secs := max(int(timeout/time.Second), 1)
	deadline := time.Now().Add(time.Duration(secs)*time.Second + l.timeout)
	for {
		var reply string
		err := l.withDomain(ctx, "guest agent command on domain", name, time.Until(deadline), 0,
			func(dom *libvirt.Domain) error {
				var err error
				reply, err = dom.QemuAgentCommand(command, libvirt.DomainQemuAgentCommandTimeout(secs), 0)
				return err
			})
		if err == nil {
			return reply, nil
		}
		if !agentNotConnected(err) || !l.reconnectedWithin(agentReconnectWindow) || time.Until(deadline) < reconnectRetry {
			return "", err
		}
		if werr := waitUntil(ctx, deadline, time.After(reconnectRetry)); werr != nil {
			return "", err
		}
	}
}

// agentReconnectWindow is how long after a reconnection to libvirtd an
// agent command refused as "not connected" is retried.
const agentReconnectWindow = 30 * time.Second

// agentNotConnected reports whether err is libvirt refusing an agent
// command because it has no connection to the agent (the command was not
// sent).
func agentNotConnected(err error) bool {
	return errors.Is(err, errdefs.ErrFailedPrecondition) && strings.Contains(err.Error(), "guest agent is not connected")
}

// reconnectedWithin reports whether the connection was made again, after
// a loss, less than d ago.
func (l *Libvirt) reconnectedWithin(d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.reconnectedAt.IsZero() && time.Since(l.reconnectedAt) < d
}

// SetCPUTune implements Domains. periodUS and quotaUS are the whole
// domain's CFS period and quota (<global_period>, <global_quota>), as the
// domain builder writes them; shares is <shares>. A domain that is not
// running has only its definition changed.
func (l *Libvirt) SetCPUTune(ctx context.Context, name string, shares uint64, periodUS uint64, quotaUS int64) error {
	params := &libvirt.DomainSchedulerParameters{
		CpuSharesSet: shares != 0, CpuShares: shares,
		GlobalPeriodSet: periodUS != 0, GlobalPeriod: periodUS,
		GlobalQuotaSet: quotaUS != 0, GlobalQuota: quotaUS,
	}
	return l.withDomain(ctx, "set CPU tuning of domain", name, l.timeout, retrySafe, func(dom *libvirt.Domain) error {
		if shares == 0 && periodUS == 0 && quotaUS == 0 {
			return nil
		}
		active, err := dom.IsActive()
		if err != nil {
			return err
		}
		if active {
			err = dom.SetSchedulerParametersFlags(params, libvirt.DOMAIN_AFFECT_LIVE|libvirt.DOMAIN_AFFECT_CONFIG)
			if !hasCode(err, libvirt.ERR_OPERATION_INVALID) {
				return err
			}
			// It stopped since IsActive: change the definition only.
		}
		return dom.SetSchedulerParametersFlags(params, libvirt.DOMAIN_AFFECT_CONFIG)
	})
}

// WaitShutoff implements Domains by polling Status until timeout, each
// poll with its own call deadline. It rides out a libvirtd restart: while
// libvirtd is unavailable it keeps polling, and returns the
// ErrUnavailable error only if the timeout passes so.
func (l *Libvirt) WaitShutoff(ctx context.Context, name string, timeout time.Duration) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(statusPollInterval)
	defer tick.Stop()
	var last error // the last poll's ErrUnavailable, nil after one that answered
	for {
		st, err := l.Status(wctx, name)
		switch {
		case err == nil && st.State == DomainShutoff:
			return true, nil
		case ctx.Err() != nil:
			return false, fmt.Errorf("wait for domain %q to shut off: %w", name, ctx.Err())
		case wctx.Err() != nil:
			return false, last
		case errors.Is(err, errdefs.ErrUnavailable):
			last = err
		case err != nil:
			return false, err
		default:
			last = nil
		}
		select {
		case <-wctx.Done():
		case <-tick.C:
		}
	}
}
