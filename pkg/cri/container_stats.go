package cri

import (
	"context"
	"os"
	"strings"
	"syscall"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// The stats RPCs read every running VM's usage with one bulk libvirt call
// (cheap enough for the kubelet's polling) and map it:
//
//	CPU            QEMU's CPU time for the guest (cpu.time)
//	memory         working set and usage: the guest's memory minus what
//	               the guest reports usable (balloon stats), else QEMU's
//	               RSS; RSS: QEMU's resident memory on the host
//	writable layer the root overlay's allocated bytes
//
//	network        (pod stats) the pod interfaces' counters in the netns

// ContainerStats returns one container's usage.
func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	stats, err := s.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(c, stats)}, nil
}

// ListContainerStats returns the usage of the containers the filter selects.
func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	stats, err := s.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	out := []*runtimeapi.ContainerStats{}
	for _, c := range s.state.listContainers() {
		rec, cfg := c.snapshot()
		if rec.State == containerCreating ||
			f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) ||
			f.GetPodSandboxId() != "" && !strings.HasPrefix(rec.SandboxID, f.GetPodSandboxId()) ||
			!labelsMatch(cfg.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, s.containerStats(c, stats))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

// PodSandboxStats returns a pod's usage: its VM's.
func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	stats, err := s.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.sandboxStats(sb, stats)}, nil
}

// ListPodSandboxStats returns the usage of the pods the filter selects.
func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	stats, err := s.domainStats(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	out := []*runtimeapi.PodSandboxStats{}
	for _, sb := range s.state.listSandboxes() {
		if f.GetId() != "" && !strings.HasPrefix(sb.rec.ID, f.GetId()) || !labelsMatch(sb.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, s.sandboxStats(sb, stats))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

func (s *Service) domainStats(ctx context.Context) (map[string]libvirttools.DomainStats, error) {
	list, err := s.libvirt.Stats(ctx, domainPrefix)
	if err != nil {
		return nil, err
	}
	m := make(map[string]libvirttools.DomainStats, len(list))
	for _, d := range list {
		m[d.Name] = d
	}
	return m, nil
}

func (s *Service) containerStats(c *container, stats map[string]libvirttools.DomainStats) *runtimeapi.ContainerStats {
	rec, cfg := c.snapshot()
	now := s.now().UnixNano()
	cs := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: rec.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:        &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{}},
		Memory:     &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{}},
	}
	if d, ok := stats[rec.Domain]; ok && rec.State == containerRunning {
		used := d.MemoryRSSBytes
		if d.MemoryUsableBytes > 0 && d.MemoryUsableBytes < d.MemoryBytes {
			used = d.MemoryBytes - d.MemoryUsableBytes
		}
		cs.Cpu.UsageCoreNanoSeconds.Value = d.CPUTimeNs
		cs.Memory.WorkingSetBytes.Value = used
		cs.Memory.UsageBytes = &runtimeapi.UInt64Value{Value: used}
		cs.Memory.RssBytes = &runtimeapi.UInt64Value{Value: d.MemoryRSSBytes}
	}
	if st, err := os.Stat(rec.RootDisk); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			cs.WritableLayer = &runtimeapi.FilesystemUsage{
				Timestamp: now, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: rec.Dir},
				UsedBytes: &runtimeapi.UInt64Value{Value: uint64(sys.Blocks) * 512}, InodesUsed: &runtimeapi.UInt64Value{Value: 1},
			}
		}
	}
	return cs
}

func (s *Service) sandboxStats(sb *sandbox, stats map[string]libvirttools.DomainStats) *runtimeapi.PodSandboxStats {
	ps := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.rec.ID, Metadata: sb.config.GetMetadata(), Labels: sb.config.GetLabels(), Annotations: sb.config.GetAnnotations()},
		Linux:      &runtimeapi.LinuxPodSandboxStats{},
	}
	now := s.now().UnixNano()
	var cpu, mem uint64
	for _, c := range s.state.containersOf(sb.rec.ID) {
		cs := s.containerStats(c, stats)
		ps.Linux.Containers = append(ps.Linux.Containers, cs)
		cpu += cs.Cpu.UsageCoreNanoSeconds.Value
		mem += cs.Memory.WorkingSetBytes.Value
	}
	ps.Linux.Cpu = &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpu}}
	ps.Linux.Memory = &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: mem}}
	ps.Linux.Network = s.networkUsage(sb, now)
	return ps
}

// networkUsage reads the pod's interface counters; nil without a network
// (or when they cannot be read: stats are best effort).
func (s *Service) networkUsage(sb *sandbox, now int64) *runtimeapi.NetworkUsage {
	sb.mu.Lock()
	att := sandboxNetwork(sb.rec)
	sb.mu.Unlock()
	if att == nil || s.net == nil {
		return nil
	}
	usage, err := s.net.Usage(att)
	if err != nil || len(usage) == 0 {
		return nil
	}
	nu := &runtimeapi.NetworkUsage{Timestamp: now}
	for i, u := range usage {
		iu := &runtimeapi.NetworkInterfaceUsage{
			Name:    u.Name,
			RxBytes: &runtimeapi.UInt64Value{Value: u.RxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: u.RxErrors},
			TxBytes: &runtimeapi.UInt64Value{Value: u.TxBytes}, TxErrors: &runtimeapi.UInt64Value{Value: u.TxErrors},
		}
		if i == 0 {
			nu.DefaultInterface = iu
		} else {
			nu.Interfaces = append(nu.Interfaces, iu)
		}
	}
	return nu
}
