package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListContainers lists containers filtered by ID (or prefix), state, pod
// sandbox and labels. It makes no libvirt call: running VMs are checked by
// the monitor.
func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	out := []*runtimeapi.Container{}
	for _, c := range s.state.listContainers() {
		rec, cfg := c.snapshot()
		if rec.State == containerCreating {
			continue
		}
		st := criState(rec.State)
		switch {
		case f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()),
			f.GetPodSandboxId() != "" && !strings.HasPrefix(rec.SandboxID, f.GetPodSandboxId()),
			f.GetState() != nil && f.GetState().GetState() != st,
			!labelsMatch(cfg.GetLabels(), f.GetLabelSelector()):
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: rec.ID, PodSandboxId: rec.SandboxID, Metadata: cfg.GetMetadata(),
			Image: &runtimeapi.ImageSpec{Image: rec.ImageName}, ImageRef: rec.ImageRef, ImageId: rec.ImageRef,
			State: st, CreatedAt: rec.CreatedAt, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}
