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

// The Domains methods of Libvirt: one libvirt call each (or a few), with
// libvirt's errors translated by fail.

// Define implements Domains.
func (l *Libvirt) Define(ctx context.Context, xml string) error {
	const op = "define domain"
	lc, err := l.connect(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer l.release(lc)
	dom, err := lc.c.DomainDefineXML(xml)
	if err != nil {
		return l.fail(lc, op, err)
	}
	dom.Free()
	return nil
}

// Start implements Domains.
func (l *Libvirt) Start(ctx context.Context, name string, paused bool) error {
	return l.withDomain(ctx, "start domain", name, func(dom *libvirt.Domain) error {
		flags := libvirt.DOMAIN_NONE
		if paused {
			flags = libvirt.DOMAIN_START_PAUSED
		}
		return dom.CreateWithFlags(flags)
	})
}

// Resume implements Domains.
func (l *Libvirt) Resume(ctx context.Context, name string) error {
	return l.withDomain(ctx, "resume domain", name, func(dom *libvirt.Domain) error {
		return dom.Resume()
	})
}

// Shutdown implements Domains.
func (l *Libvirt) Shutdown(ctx context.Context, name string) error {
	return l.withDomain(ctx, "shut down domain", name, func(dom *libvirt.Domain) error {
		return dom.Shutdown()
	})
}

// Destroy implements Domains.
func (l *Libvirt) Destroy(ctx context.Context, name string) error {
	return l.withDomain(ctx, "destroy domain", name, func(dom *libvirt.Domain) error {
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
	err := l.withDomain(ctx, "undefine domain", name, func(dom *libvirt.Domain) error {
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
	err := l.withDomain(ctx, "get state of domain", name, func(dom *libvirt.Domain) error {
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
	return st, err
}

// eachDomainStats makes one virConnectGetAllDomainStats call and calls fn
// for every returned domain whose name starts with prefix (names and UUIDs
// of the returned handles are read locally, without further RPCs). It
// frees the handles.
func (l *Libvirt) eachDomainStats(ctx context.Context, op string, types libvirt.DomainStatsTypes, flags libvirt.ConnectGetAllDomainStatsFlags,
	prefix string, fn func(name string, dom *libvirt.Domain, s *libvirt.DomainStats) error) error {
	lc, err := l.connect(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer l.release(lc)
	stats, err := lc.c.GetAllDomainStats(nil, types, flags)
	if err != nil {
		return l.fail(lc, op, err)
	}
	defer func() {
		for _, s := range stats {
			s.Domain.Free()
		}
	}()
	for i := range stats {
		s := &stats[i]
		name, err := s.Domain.GetName()
		if err != nil {
			return l.fail(lc, op, err)
		}
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if err := fn(name, s.Domain, s); err != nil {
			return l.fail(lc, op, err)
		}
	}
	return nil
}

// List implements Domains. It makes one RPC,
// virConnectGetAllDomainStats(VIR_DOMAIN_STATS_STATE), which returns the
// state and reason of every domain, running or not.
func (l *Libvirt) List(ctx context.Context, prefix string) ([]DomainStatus, error) {
	var out []DomainStatus
	err := l.eachDomainStats(ctx, "list domains", libvirt.DOMAIN_STATS_STATE, 0, prefix,
		func(name string, dom *libvirt.Domain, s *libvirt.DomainStats) error {
			uuid, err := dom.GetUUIDString()
			if err != nil {
				return err
			}
			st := DomainStatus{Name: name, UUID: uuid}
			if s.State != nil && s.State.StateSet {
				st.State, st.Reason = statusFromState(s.State.State, s.State.Reason)
			}
			out = append(out, st)
			return nil
		})
	return out, err
}

// Stats implements Domains with one GetAllDomainStats call for the running
// domains.
func (l *Libvirt) Stats(ctx context.Context, prefix string) ([]DomainStats, error) {
	var out []DomainStats
	err := l.eachDomainStats(ctx, "domain stats",
		libvirt.DOMAIN_STATS_CPU_TOTAL|libvirt.DOMAIN_STATS_BALLOON|libvirt.DOMAIN_STATS_BLOCK,
		libvirt.CONNECT_GET_ALL_DOMAINS_STATS_RUNNING, prefix,
		func(name string, _ *libvirt.Domain, s *libvirt.DomainStats) error {
			d := DomainStats{Name: name}
			if s.Cpu != nil && s.Cpu.TimeSet {
				d.CPUTimeNs = s.Cpu.Time
			}
			if b := s.Balloon; b != nil {
				if b.CurrentSet {
					d.MemoryBytes = b.Current << 10
				}
				if b.RssSet {
					d.MemoryRSSBytes = b.Rss << 10
				}
				if b.UsableSet {
					d.MemoryUsableBytes = b.Usable << 10
				}
			}
			for _, blk := range s.Block {
				d.DiskReadBytes += blk.RdBytes
				d.DiskWriteBytes += blk.WrBytes
			}
			out = append(out, d)
			return nil
		})
	return out, err
}

// XML implements Domains.
func (l *Libvirt) XML(ctx context.Context, name string) (string, error) {
	var doc string
	err := l.withDomain(ctx, "get XML of domain", name, func(dom *libvirt.Domain) error {
		var err error
		doc, err = dom.GetXMLDesc(0)
		return err
	})
	return doc, err
}

// AgentCommand implements Domains.
func (l *Libvirt) AgentCommand(ctx context.Context, name, command string, timeout time.Duration) (string, error) {
	secs := int(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	var reply string
	err := l.withDomain(ctx, "guest agent command on domain", name, func(dom *libvirt.Domain) error {
		var err error
		reply, err = dom.QemuAgentCommand(command, libvirt.DomainQemuAgentCommandTimeout(secs), 0)
		return err
	})
	return reply, err
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
	return l.withDomain(ctx, "set CPU tuning of domain", name, func(dom *libvirt.Domain) error {
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

// WaitShutoff implements Domains by polling Status. It rides out a
// libvirtd restart: while libvirtd is unavailable it keeps polling, and
// returns the ErrUnavailable error only if the timeout passes so.
func (l *Libvirt) WaitShutoff(ctx context.Context, name string, timeout time.Duration) (bool, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(statusPollInterval)
	defer tick.Stop()
	for {
		st, err := l.Status(ctx, name)
		switch {
		case errors.Is(err, errdefs.ErrUnavailable):
		case err != nil:
			return false, err
		case st.State == DomainShutoff:
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("wait for domain %q to shut off: %w", name, ctx.Err())
		case <-deadline.C:
			return false, err
		case <-tick.C:
		}
	}
}
