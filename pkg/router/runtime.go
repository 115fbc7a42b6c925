package router

// The RuntimeService, one line of routing per RPC where possible. The rules
// are in the package comment; the helpers in route.go and merge.go.

import (
	"context"
	"encoding/json"
	"slices"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type rs = runtimeapi.RuntimeServiceClient

// Version is the primary's: the kubelet sees the node's primary runtime.
func (r *Router) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return toPrimary(ctx, r, req, rs.Version)
}

// RuntimeConfig is the primary's (the cgroup driver the kubelet must use).
func (r *Router) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return toPrimary(ctx, r, req, rs.RuntimeConfig)
}

// UpdateRuntimeConfig (the pod CIDR) goes to both; the primary's answer
// counts, vmpod's failure is only logged.
func (r *Router) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return merge(ctx, r, "UpdateRuntimeConfig", runtimeClient, req, rs.UpdateRuntimeConfig,
		func(p, v *runtimeapi.UpdateRuntimeConfigResponse) {})
}

// Status is the primary's, with vmpod's handlers appended to
// runtime_handlers. vmpod's own conditions do not make the node not ready
// (the node's other pods do not need vmpod); with verbose they are shown
// under info["vmpod"].
func (r *Router) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	resp, err := r.primary.rt.Status(ctx, req)
	if err != nil {
		return nil, r.primary.wrap(err)
	}
	vctx, cancel := r.vmContext(ctx)
	defer cancel()
	vresp, verr := r.vm.rt.Status(vctx, req)
	r.vmAnswered("Status", verr)

	features := map[string]*runtimeapi.RuntimeHandlerFeatures{}
	for _, h := range vresp.GetRuntimeHandlers() {
		features[h.GetName()] = h.GetFeatures()
	}
	resp.RuntimeHandlers = slices.DeleteFunc(resp.RuntimeHandlers, func(h *runtimeapi.RuntimeHandler) bool { return r.handlers[h.GetName()] })
	for _, name := range r.handlerList {
		f := features[name]
		if f == nil {
			f = features[""] // vmpod's entry for its default handler
		}
		if f == nil {
			f = &runtimeapi.RuntimeHandlerFeatures{}
		}
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: name, Features: f})
	}
	if req.GetVerbose() {
		info := map[string]any{"endpoint": r.vm.endpoint, "handlers": r.handlerList}
		if verr != nil {
			info["error"] = verr.Error()
		} else {
			info["conditions"] = vresp.GetStatus().GetConditions()
		}
		b, _ := json.Marshal(info)
		if resp.Info == nil {
			resp.Info = map[string]string{}
		}
		resp.Info["vmpod"] = string(b)
	}
	return resp, nil
}

// RunPodSandbox goes to vmpod when runtime_handler is a vmpod handler.
func (r *Router) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	b := r.primary
	if r.handlers[req.GetRuntimeHandler()] {
		b = r.vm
	}
	resp, err := b.rt.RunPodSandbox(ctx, req)
	if err != nil {
		return nil, b.wrap(err)
	}
	r.cache.put(resp.GetPodSandboxId(), b)
	return resp, nil
}

// StopPodSandbox goes to the sandbox's owner.
func (r *Router) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return bySandbox(ctx, r, req, rs.StopPodSandbox)
}

// RemovePodSandbox goes to the sandbox's owner.
func (r *Router) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	resp, err := bySandbox(ctx, r, req, rs.RemovePodSandbox)
	if err == nil {
		r.cache.forget(req.GetPodSandboxId())
	}
	return resp, err
}

// PodSandboxStatus goes to the sandbox's owner.
func (r *Router) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	return bySandbox(ctx, r, req, rs.PodSandboxStatus)
}

// PortForward goes to the sandbox's owner; its URL is returned untouched.
func (r *Router) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return bySandbox(ctx, r, req, rs.PortForward)
}

// PodSandboxStats goes to the sandbox's owner.
func (r *Router) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	return bySandbox(ctx, r, req, rs.PodSandboxStats)
}

// UpdatePodSandboxResources goes to the sandbox's owner.
func (r *Router) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	return bySandbox(ctx, r, req, rs.UpdatePodSandboxResources)
}

// CheckpointPod goes to the sandbox's owner.
func (r *Router) CheckpointPod(ctx context.Context, req *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return bySandbox(ctx, r, req, rs.CheckpointPod)
}

// RestorePod names no handler and no existing ID: it goes to the primary.
func (r *Router) RestorePod(ctx context.Context, req *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return toPrimary(ctx, r, req, rs.RestorePod)
}

// CreateContainer goes to the owner of its sandbox.
func (r *Router) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	b, err := r.sandboxBackend(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp, err := b.rt.CreateContainer(ctx, req)
	if err != nil {
		return nil, b.wrap(err)
	}
	r.cache.put(resp.GetContainerId(), b)
	return resp, nil
}

// StartContainer goes to the container's owner.
func (r *Router) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	return byContainer(ctx, r, req, rs.StartContainer)
}

// StopContainer goes to the container's owner.
func (r *Router) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	return byContainer(ctx, r, req, rs.StopContainer)
}

// RemoveContainer goes to the container's owner.
func (r *Router) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	resp, err := byContainer(ctx, r, req, rs.RemoveContainer)
	if err == nil {
		r.cache.forget(req.GetContainerId())
	}
	return resp, err
}

// ContainerStatus goes to the container's owner.
func (r *Router) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	return byContainer(ctx, r, req, rs.ContainerStatus)
}

// UpdateContainerResources goes to the container's owner.
func (r *Router) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return byContainer(ctx, r, req, rs.UpdateContainerResources)
}

// ReopenContainerLog goes to the container's owner.
func (r *Router) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	return byContainer(ctx, r, req, rs.ReopenContainerLog)
}

// ExecSync goes to the container's owner.
func (r *Router) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	return byContainer(ctx, r, req, rs.ExecSync)
}

// Exec goes to the container's owner; its URL is returned untouched.
func (r *Router) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return byContainer(ctx, r, req, rs.Exec)
}

// Attach goes to the container's owner; its URL is returned untouched.
func (r *Router) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return byContainer(ctx, r, req, rs.Attach)
}

// ContainerStats goes to the container's owner.
func (r *Router) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	return byContainer(ctx, r, req, rs.ContainerStats)
}

// CheckpointContainer goes to the container's owner.
func (r *Router) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return byContainer(ctx, r, req, rs.CheckpointContainer)
}

// ListPodSandbox merges both runtimes' sandboxes. While vmpod does not
// answer, its part is the sandboxes it last listed (heldLists).
func (r *Router) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	return mergeOr(ctx, r, "ListPodSandbox", runtimeClient, req, rs.ListPodSandbox,
		func(p, v *runtimeapi.ListPodSandboxResponse) {
			if unfilteredSandboxes(f) {
				r.held.keepSandboxes(v.Items)
			}
			p.Items = append(p.Items, v.Items...)
		},
		func(p *runtimeapi.ListPodSandboxResponse) {
			items, ok := r.held.heldSandboxes(f)
			r.heldUsed("ListPodSandbox", ok, len(items))
			p.Items = append(p.Items, items...)
		})
}

// ListContainers merges both runtimes' containers. While vmpod does not
// answer, its part is the containers it last listed (heldLists).
func (r *Router) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	return mergeOr(ctx, r, "ListContainers", runtimeClient, req, rs.ListContainers,
		func(p, v *runtimeapi.ListContainersResponse) {
			if unfilteredContainers(f) {
				r.held.keepContainers(v.Containers)
			}
			p.Containers = append(p.Containers, v.Containers...)
		},
		func(p *runtimeapi.ListContainersResponse) {
			items, ok := r.held.heldContainers(f)
			r.heldUsed("ListContainers", ok, len(items))
			p.Containers = append(p.Containers, items...)
		})
}

// ListContainerStats merges both runtimes' container stats.
func (r *Router) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return merge(ctx, r, "ListContainerStats", runtimeClient, req, rs.ListContainerStats,
		func(p, v *runtimeapi.ListContainerStatsResponse) { p.Stats = append(p.Stats, v.Stats...) })
}

// ListPodSandboxStats merges both runtimes' sandbox stats.
func (r *Router) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return merge(ctx, r, "ListPodSandboxStats", runtimeClient, req, rs.ListPodSandboxStats,
		func(p, v *runtimeapi.ListPodSandboxStatsResponse) { p.Stats = append(p.Stats, v.Stats...) })
}

// ListMetricDescriptors merges both runtimes' descriptors.
func (r *Router) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return merge(ctx, r, "ListMetricDescriptors", runtimeClient, req, rs.ListMetricDescriptors,
		func(p, v *runtimeapi.ListMetricDescriptorsResponse) {
			p.Descriptors = append(p.Descriptors, v.Descriptors...)
		})
}

// ListPodSandboxMetrics merges both runtimes' metrics.
func (r *Router) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return merge(ctx, r, "ListPodSandboxMetrics", runtimeClient, req, rs.ListPodSandboxMetrics,
		func(p, v *runtimeapi.ListPodSandboxMetricsResponse) {
			p.PodMetrics = append(p.PodMetrics, v.PodMetrics...)
		})
}

// StreamPodSandboxes streams the merged ListPodSandbox answer.
func (r *Router) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	resp, err := r.ListPodSandbox(srv.Context(), &runtimeapi.ListPodSandboxRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.Items, func(c []*runtimeapi.PodSandbox) *runtimeapi.StreamPodSandboxesResponse {
		return &runtimeapi.StreamPodSandboxesResponse{PodSandboxes: c}
	}, srv.Send)
}

// StreamContainers streams the merged ListContainers answer.
func (r *Router) StreamContainers(req *runtimeapi.StreamContainersRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	resp, err := r.ListContainers(srv.Context(), &runtimeapi.ListContainersRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.Containers, func(c []*runtimeapi.Container) *runtimeapi.StreamContainersResponse {
		return &runtimeapi.StreamContainersResponse{Containers: c}
	}, srv.Send)
}

// StreamContainerStats streams the merged ListContainerStats answer.
func (r *Router) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	resp, err := r.ListContainerStats(srv.Context(), &runtimeapi.ListContainerStatsRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.Stats, func(c []*runtimeapi.ContainerStats) *runtimeapi.StreamContainerStatsResponse {
		return &runtimeapi.StreamContainerStatsResponse{ContainerStats: c}
	}, srv.Send)
}

// StreamPodSandboxStats streams the merged ListPodSandboxStats answer.
func (r *Router) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	resp, err := r.ListPodSandboxStats(srv.Context(), &runtimeapi.ListPodSandboxStatsRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.Stats, func(c []*runtimeapi.PodSandboxStats) *runtimeapi.StreamPodSandboxStatsResponse {
		return &runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: c}
	}, srv.Send)
}

// StreamPodSandboxMetrics streams the merged ListPodSandboxMetrics answer.
func (r *Router) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, srv grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	resp, err := r.ListPodSandboxMetrics(srv.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return err
	}
	return sendChunks(resp.PodMetrics, func(c []*runtimeapi.PodSandboxMetrics) *runtimeapi.StreamPodSandboxMetricsResponse {
		return &runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: c}
	}, srv.Send)
}

// GetContainerEvents merges both runtimes' event streams (merge.go).
func (r *Router) GetContainerEvents(req *runtimeapi.GetEventsRequest, srv grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	return r.mergeEvents(req, srv)
}
