package lifecycle

import (
	"context"
	"sync"
	"time"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/vm"
)

// The stats collector samples every running VM of vmpod's own records
// once per stats_interval (CollectStats), and the stats RPCs answer from
// its samples instead of asking libvirt themselves:
//
//	every stats_interval (or on a call finding the last round as old as
//	stats_interval, or a running VM never sampled; the call waits for
//	that round at most DefaultStatsWait):
//	  VMs in their pods' cgroups  -> the cgroup's files (CPU, memory)
//	  other running VMs           -> one libvirt stats call for them only,
//	                                 groups state|cpu-total|balloon, NOWAIT:
//	                                 a busy domain keeps its last sample
//	  every container's root disk -> stat(2) of the overlay
//	  every pod                   -> its cgroup's usage (when placed) and
//	                                 its interfaces' counters in its netns
//
// Each figure keeps the time it was read; a CPU/memory sample older than
// stats_max_age when read is left out (the VM has no usage in the answer).
// Only domain names from the controller's records reach libvirt, so no
// stats call touches another user's domain on the shared libvirtd.

// vmSample is one VM's figures at one moment.
type vmSample struct {
	at      time.Time // when CPU and memory were read; zero: never
	usage   vm.Usage
	cgroup  *cgroups.Usage // the VM cgroup's, when usage comes from it
	diskAt  time.Time
	disk    uint64
	hasDisk bool
}

// podSample is one pod's figures.
type podSample struct {
	cgroupAt time.Time
	cgroup   *cgroups.Usage
	netAt    time.Time
	net      []InterfaceUsage
}

// statsCache holds the latest samples.
type statsCache struct {
	round sync.Mutex // one sampling round at a time

	mu   sync.RWMutex
	last time.Time            // start of the last finished round
	vms  map[string]vmSample  // by container ID
	pods map[string]podSample // by sandbox ID
	// callRound is closed when the round a stats call started ends; nil
	// when none is under way.
	callRound chan struct{}
	// inRound is the start of the round under way; zero when none is.
	inRound time.Time
}

func (c *Controller) statsInterval() time.Duration {
	if d := time.Duration(c.cfg.StatsInterval); d > 0 {
		return d
	}
	return time.Second
}

func (c *Controller) statsMaxAge() time.Duration {
	if d := time.Duration(c.cfg.StatsMaxAge); d >= c.statsInterval() {
		return d
	}
	return 5 * c.statsInterval()
}

// CollectStats samples every running VM once per stats_interval until ctx
// is done.
func (c *Controller) CollectStats(ctx context.Context) {
	t := time.NewTicker(c.statsInterval())
	defer t.Stop()
	for {
		c.sampleStats(ctx, time.Time{})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DefaultStatsWait is how long a stats call waits at most for the round
// it needs. A round names every running VM in one libvirt call and reads
// every pod's interface counters: a few milliseconds on a quiet node, but
// seconds while VMs start (libvirtd serves 5 calls at a time per
// connection, the starts among them) or on a loaded node. bench/density
// measured ListContainerStats at 3.3 s median while 25 VMs booted, and
// 430 ms p99 with 25 idle, when every call waited for its round; the
// kubelet's stats calls want tens of milliseconds.
const DefaultStatsWait = 20 * time.Millisecond

// freshStats returns the samples, after a round when the last round
// started stats_interval ago or earlier (the loop is late, stuck or not
// running) or a running VM has no sample yet. So two calls at least
// stats_interval apart never get the same round's figures (crictl stats
// reads twice a second apart and fails when the CPU's time did not move)
// as long as rounds are quick. A round that takes longer than statsWait
// goes on in the background for the calls after, and this one answers from
// the last samples, each with the time it was read: one call starts a
// round, the calls meanwhile wait for that one. A call that finds a round
// under way that started within stats_interval does not wait at all.
func (c *Controller) freshStats(ctx context.Context) (map[string]vmSample, map[string]podSample) {
	s := &c.stats
	s.mu.Lock()
	now := c.now()
	last, stale := s.last, now.Sub(s.last) >= c.statsInterval()
	if stale && !s.inRound.IsZero() && now.Sub(s.inRound) < c.statsInterval() {
		// A round started within stats_interval is under way: the loop
		// keeps up, its rounds only take longer than stats_interval
		// (many VMs, a loaded node). Waiting for it would make every
		// call wait (bench/density: 20 ms median at 71 VMs and more).
		stale = false
	}
	if !stale {
		for _, ct := range c.reg.listContainers() {
			r := ct.Get()
			if _, ok := s.vms[r.ID]; r.State == ContainerRunning && !ok {
				stale = true
				break
			}
		}
	}
	var round chan struct{}
	if stale {
		if s.callRound == nil {
			s.callRound = make(chan struct{})
			done := s.callRound
			// Not the call's context: the round outlives a call that
			// stops waiting, and its libvirt call has its own bound.
			rctx := context.WithoutCancel(ctx)
			go func() {
				c.sampleStats(rctx, last)
				s.mu.Lock()
				s.callRound = nil
				s.mu.Unlock()
				close(done)
			}()
		}
		round = s.callRound
	}
	s.mu.Unlock()
	if round != nil {
		t := time.NewTimer(c.statsWait)
		select {
		case <-round:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.vms, s.pods
}

// SampleStats runs one sampling round now (the loop's; tests call it).
func (c *Controller) SampleStats(ctx context.Context) { c.sampleStats(ctx, time.Time{}) }

// sampleStats runs one round, unless one finished after since (a caller
// that waited for another's round uses that one; zero always runs).
func (c *Controller) sampleStats(ctx context.Context, since time.Time) {
	s := &c.stats
	s.round.Lock()
	defer s.round.Unlock()
	s.mu.RLock()
	done, prev := !since.IsZero() && s.last.After(since), s.vms
	s.mu.RUnlock()
	if done {
		return
	}
	start := c.now()
	s.mu.Lock()
	s.inRound = start
	s.mu.Unlock()
	vms := make(map[string]vmSample)
	var names []string
	byDomain := map[string]string{}
	placedOf := map[string]*cgroups.Placement{} // by sandbox ID
	for _, ct := range c.reg.listContainers() {
		r := ct.Get()
		if r.State == ContainerCreating {
			continue
		}
		smp := vmSample{}
		smp.disk, smp.hasDisk = vm.DiskBytes(r.RootDisk)
		smp.diskAt = c.now()
		if r.Cgroup != nil && (placedOf[r.SandboxID] == nil || r.State == ContainerRunning) {
			placedOf[r.SandboxID] = r.Cgroup
		}
		if r.State == ContainerRunning {
			if p := r.Cgroup; p != nil && c.cgroups != nil {
				if u, err := c.cgroups.Stats(*p); err == nil {
					smp.at, smp.cgroup = c.now(), &u
					smp.usage = vm.Usage{CPUTimeNs: u.CPUNs, WorkingSetBytes: u.WorkingSetBytes, UsageBytes: u.MemoryBytes, RSSBytes: u.RSSBytes}
				} else {
					c.log.Debug("reading the VM's cgroup; libvirt's figures instead", logging.KeyContainerID, r.ID, logging.KeyErr, err)
				}
			}
			if smp.at.IsZero() {
				names = append(names, r.Domain)
				byDomain[r.Domain] = r.ID
				if old, ok := prev[r.ID]; ok && old.cgroup == nil { // kept if the domain is busy
					smp.at, smp.usage = old.at, old.usage
				}
			}
		}
		vms[r.ID] = smp
	}
	if len(names) > 0 {
		// A hung libvirtd holds the round (and callers waiting for
		// one) no longer than stats_max_age.
		lctx, cancel := context.WithTimeout(ctx, c.statsMaxAge())
		list, err := c.libvirt.Stats(lctx, names)
		cancel()
		if err != nil {
			c.log.Debug("sampling VM stats from libvirt; keeping the last samples", logging.KeyErr, err)
		}
		for _, d := range list {
			id := byDomain[d.Name]
			smp := vms[id]
			switch {
			case !d.Running: // stopped since: no usage
				smp.at, smp.usage = time.Time{}, vm.Usage{}
			case d.HasCPU && d.HasMemory:
				smp.at, smp.usage = c.now(), vm.UsageOf(d)
			}
			vms[id] = smp
		}
	}
	pods := make(map[string]podSample)
	for _, sb := range c.reg.listSandboxes() {
		v := sb.view()
		var ps podSample
		if p := placedOf[v.ID]; p != nil && c.cgroups != nil {
			if u, err := c.cgroups.PodStats(*p); err == nil {
				ps.cgroupAt, ps.cgroup = c.now(), &u
			}
		}
		if att := v.LiveNetwork(); att != nil && c.net != nil {
			if usage, err := c.net.Usage(att); err == nil && len(usage) > 0 {
				ps.netAt, ps.net = c.now(), usage
			}
		}
		pods[v.ID] = ps
	}
	s.mu.Lock()
	s.last, s.vms, s.pods, s.inRound = start, vms, pods, time.Time{}
	s.mu.Unlock()
}
