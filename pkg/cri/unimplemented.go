package cri

// The RPCs of this file are not built yet. Each returns Unimplemented with a
// message naming the area of work that will bring it, so a client (or its
// operator) knows what is missing rather than seeing a bare "unknown method".

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func notYet(method, area string) error {
	return fmt.Errorf("%s is not implemented yet in vmpod (area: %s): %w", method, area, errdefs.ErrNotImplemented)
}

// Area: the VM pod lifecycle (sandboxes and containers as libvirt domains).

// RunPodSandbox is not implemented yet.
func (s *Service) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return nil, notYet("RunPodSandbox", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// StopPodSandbox is not implemented yet.
func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return nil, notYet("StopPodSandbox", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// RemovePodSandbox is not implemented yet.
func (s *Service) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	return nil, notYet("RemovePodSandbox", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// PodSandboxStatus is not implemented yet.
func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	return nil, notYet("PodSandboxStatus", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// ListPodSandbox is not implemented yet.
func (s *Service) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return nil, notYet("ListPodSandbox", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// CreateContainer is not implemented yet.
func (s *Service) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	return nil, notYet("CreateContainer", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// StartContainer is not implemented yet.
func (s *Service) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	return nil, notYet("StartContainer", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// StopContainer is not implemented yet.
func (s *Service) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	return nil, notYet("StopContainer", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// RemoveContainer is not implemented yet.
func (s *Service) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	return nil, notYet("RemoveContainer", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// ListContainers is not implemented yet.
func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return nil, notYet("ListContainers", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// ContainerStatus is not implemented yet.
func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	return nil, notYet("ContainerStatus", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// UpdateContainerResources is not implemented yet.
func (s *Service) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return nil, notYet("UpdateContainerResources", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// UpdatePodSandboxResources is not implemented yet.
func (s *Service) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	return nil, notYet("UpdatePodSandboxResources", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// ReopenContainerLog is not implemented yet.
func (s *Service) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	return nil, notYet("ReopenContainerLog", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// Attach is not implemented yet.
func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return nil, notYet("Attach", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// Area: exec through the QEMU guest agent.

// ExecSync is not implemented yet.
func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	return nil, notYet("ExecSync", "exec through the QEMU guest agent")
}

// Exec is not implemented yet.
func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return nil, notYet("Exec", "exec through the QEMU guest agent")
}

// Area: pod networking (port-forward to the guest).

// PortForward is not implemented yet.
func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return nil, notYet("PortForward", "pod networking (port-forward to the guest)")
}

// Area: container and pod stats.

// ContainerStats is not implemented yet.
func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	return nil, notYet("ContainerStats", "container and pod stats")
}

// ListContainerStats is not implemented yet.
func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return nil, notYet("ListContainerStats", "container and pod stats")
}

// PodSandboxStats is not implemented yet.
func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	return nil, notYet("PodSandboxStats", "container and pod stats")
}

// ListPodSandboxStats is not implemented yet.
func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return nil, notYet("ListPodSandboxStats", "container and pod stats")
}

// ListMetricDescriptors is not implemented yet.
func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return nil, notYet("ListMetricDescriptors", "container and pod stats")
}

// ListPodSandboxMetrics is not implemented yet.
func (s *Service) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return nil, notYet("ListPodSandboxMetrics", "container and pod stats")
}

// Area: checkpoint/restore (not planned for VM pods).

// CheckpointContainer is not implemented yet.
func (s *Service) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, notYet("CheckpointContainer", "checkpoint/restore (not planned for VM pods)")
}

// CheckpointPod is not implemented yet.
func (s *Service) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return nil, notYet("CheckpointPod", "checkpoint/restore (not planned for VM pods)")
}

// RestorePod is not implemented yet.
func (s *Service) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, notYet("RestorePod", "checkpoint/restore (not planned for VM pods)")
}

// StreamPodSandboxes is not implemented yet (area: the VM pod lifecycle (sandboxes and containers as libvirt domains)).
func (s *Service) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	return notYet("StreamPodSandboxes", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// StreamContainers is not implemented yet (area: the VM pod lifecycle (sandboxes and containers as libvirt domains)).
func (s *Service) StreamContainers(req *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	return notYet("StreamContainers", "the VM pod lifecycle (sandboxes and containers as libvirt domains)")
}

// StreamContainerStats is not implemented yet (area: container and pod stats).
func (s *Service) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	return notYet("StreamContainerStats", "container and pod stats")
}

// StreamPodSandboxStats is not implemented yet (area: container and pod stats).
func (s *Service) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	return notYet("StreamPodSandboxStats", "container and pod stats")
}

// StreamPodSandboxMetrics is not implemented yet (area: container and pod stats).
func (s *Service) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	return notYet("StreamPodSandboxMetrics", "container and pod stats")
}

// GetContainerEvents is not implemented yet (area: container events).
func (s *Service) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	return notYet("GetContainerEvents", "container events")
}
