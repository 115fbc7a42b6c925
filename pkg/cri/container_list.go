package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListContainers lists containers filtered by ID (or prefix), state, pod
// sandbox and labels. It makes no libvirt call: running VMs are checked by
// the lifecycle's monitor.
func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	out := []*runtimeapi.Container{}
	for _, v := range s.pods.Containers() {
		st := criState(v.State)
		if f.GetId() != "" && !strings.HasPrefix(v.ID, f.GetId()) ||
			f.GetPodSandboxId() != "" && !strings.HasPrefix(v.SandboxID, f.GetPodSandboxId()) ||
			f.GetState() != nil && f.GetState().GetState() != st ||
			!labelsMatch(v.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: v.ID, PodSandboxId: v.SandboxID, Metadata: v.Config.GetMetadata(),
			Image: &runtimeapi.ImageSpec{Image: v.ImageName}, ImageRef: v.ImageRef, ImageId: v.ImageRef,
			State: st, CreatedAt: v.CreatedAt, Labels: v.Config.GetLabels(), Annotations: v.Config.GetAnnotations(),
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}
