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
	for _, sb := range s.state.listSandboxes() {
		sb.mu.Lock()
		rec, cfg := sb.rec, sb.config
		sb.mu.Unlock()
		st := sandboxStatus(rec, cfg)
		if f.GetId() != "" && !strings.HasPrefix(rec.ID, f.GetId()) {
			continue
		}
		if f.GetState() != nil && f.GetState().GetState() != st.State {
			continue
		}
		if !labelsMatch(cfg.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: rec.ID, Metadata: st.Metadata, State: st.State, CreatedAt: rec.CreatedAt,
			Labels: st.Labels, Annotations: st.Annotations, RuntimeHandler: rec.Handler,
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
