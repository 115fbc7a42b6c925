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

// Area: checkpoint/restore of whole pods (CheckpointContainer is in
// container_checkpoint.go).

// CheckpointPod is not implemented yet.
func (s *Service) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return nil, notYet("CheckpointPod", "checkpoint/restore of whole pods (CheckpointContainer checkpoints a VM pod's VM)")
}

// RestorePod is not implemented yet.
func (s *Service) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, notYet("RestorePod", "checkpoint/restore of whole pods (CreateContainer restores a VM from a CheckpointContainer archive)")
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

// StreamPodSandboxMetrics is not implemented yet (area: CRI metrics).
func (s *Service) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	return notYet("StreamPodSandboxMetrics", "CRI metrics streams (ListPodSandboxMetrics answers the kubelet)")
}
