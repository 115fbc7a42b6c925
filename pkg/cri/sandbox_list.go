package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListPodSandbox lists sandboxes, filtered by ID (or ID prefix), state and
// labels.
func (s *Service) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	out := []*runtimeapi.PodSandbox{}
	for _, v := range s.pods.Sandboxes() {
		state := sandboxState(v)
		if f.GetId() != "" && !strings.HasPrefix(v.ID, f.GetId()) ||
			f.GetState() != nil && f.GetState().GetState() != state ||
			!labelsMatch(v.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: v.ID, Metadata: v.Config.GetMetadata(), State: state, CreatedAt: v.CreatedAt,
			Labels: v.Config.GetLabels(), Annotations: v.Config.GetAnnotations(), RuntimeHandler: v.Handler,
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
