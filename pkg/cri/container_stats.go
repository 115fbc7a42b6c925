package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// ContainerStats returns one container's usage (lifecycle's stats say
// where each figure comes from).
func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	st, err := s.pods.ContainerStats(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: containerStats(st)}, nil
}

// ListContainerStats returns the usage of the containers the filter selects.
func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	all, err := s.pods.AllContainerStats(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	out := []*runtimeapi.ContainerStats{}
	for _, st := range all {
		if f.GetId() != "" && !strings.HasPrefix(st.ID, f.GetId()) ||
			f.GetPodSandboxId() != "" && !strings.HasPrefix(st.SandboxID, f.GetPodSandboxId()) ||
			!labelsMatch(st.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, containerStats(st))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

// PodSandboxStats returns a pod's usage: its cgroup's when its VM runs in
// it, else its VM's.
func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	st, err := s.pods.SandboxStats(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: sandboxStats(st)}, nil
}

// ListPodSandboxStats returns the usage of the pods the filter selects.
func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	all, err := s.pods.AllSandboxStats(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	out := []*runtimeapi.PodSandboxStats{}
	for _, st := range all {
		if f.GetId() != "" && !strings.HasPrefix(st.ID, f.GetId()) || !labelsMatch(st.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, sandboxStats(st))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

func containerStats(st lifecycle.ContainerStats) *runtimeapi.ContainerStats {
	cs := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: st.ID, Metadata: st.Config.GetMetadata(), Labels: st.Config.GetLabels(), Annotations: st.Config.GetAnnotations()},
	}
	if st.Running { // a stopped VM has no CPU and memory
		cs.Cpu = &runtimeapi.CpuUsage{Timestamp: st.Timestamp, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: st.CPUTimeNs}}
		cs.Memory = &runtimeapi.MemoryUsage{Timestamp: st.Timestamp, WorkingSetBytes: &runtimeapi.UInt64Value{Value: st.WorkingSetBytes},
			UsageBytes: &runtimeapi.UInt64Value{Value: st.UsageBytes}, RssBytes: &runtimeapi.UInt64Value{Value: st.RSSBytes}}
		if u := st.CgroupUsage; u != nil {
			cs.Memory.PageFaults = &runtimeapi.UInt64Value{Value: u.PageFaults}
			cs.Memory.MajorPageFaults = &runtimeapi.UInt64Value{Value: u.MajorPageFaults}
		}
	}
	if st.HasRootDisk {
		cs.WritableLayer = &runtimeapi.FilesystemUsage{
			Timestamp: st.DiskTimestamp, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: st.Dir},
			UsedBytes: &runtimeapi.UInt64Value{Value: st.RootDiskBytes}, InodesUsed: &runtimeapi.UInt64Value{Value: 1},
		}
	}
	return cs
}

func sandboxStats(st lifecycle.SandboxStats) *runtimeapi.PodSandboxStats {
	ps := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: st.ID, Metadata: st.Config.GetMetadata(), Labels: st.Config.GetLabels(), Annotations: st.Config.GetAnnotations()},
		Linux:      &runtimeapi.LinuxPodSandboxStats{},
	}
	running := st.CgroupUsage != nil
	for _, cs := range st.Containers {
		running = running || cs.Running
	}
	if running { // the sum of its running VMs' (or its cgroup's)
		ps.Linux.Cpu = &runtimeapi.CpuUsage{Timestamp: st.Timestamp, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: st.CPUTimeNs}}
		ps.Linux.Memory = &runtimeapi.MemoryUsage{Timestamp: st.Timestamp, WorkingSetBytes: &runtimeapi.UInt64Value{Value: st.WorkingSetBytes}}
	}
	if u := st.CgroupUsage; u != nil {
		m := ps.Linux.Memory
		m.UsageBytes, m.RssBytes = &runtimeapi.UInt64Value{Value: u.MemoryBytes}, &runtimeapi.UInt64Value{Value: u.RSSBytes}
		m.PageFaults, m.MajorPageFaults = &runtimeapi.UInt64Value{Value: u.PageFaults}, &runtimeapi.UInt64Value{Value: u.MajorPageFaults}
	}
	for _, cs := range st.Containers {
		ps.Linux.Containers = append(ps.Linux.Containers, containerStats(cs))
	}
	if len(st.Network) > 0 {
		nu := &runtimeapi.NetworkUsage{Timestamp: st.NetworkTimestamp}
		for i, u := range st.Network {
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
		ps.Linux.Network = nu
	}
	return ps
}
