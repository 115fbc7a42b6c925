package cri

import (
	"context"
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// ContainerStatus reports the container, checking a running VM's domain
// first so a guest that just powered off shows EXITED. Verbose info has the
// domain name, its XML, the disk paths and the guest agent.
func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	v, err := s.pods.Container(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: containerStatus(v)}
	if req.GetVerbose() {
		info, err := s.pods.ContainerInfo(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func criState(state string) runtimeapi.ContainerState {
	switch state {
	case lifecycle.ContainerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case lifecycle.ContainerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case lifecycle.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func containerStatus(v lifecycle.ContainerView) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:          v.ID,
		Metadata:    v.Config.GetMetadata(),
		State:       criState(v.State),
		CreatedAt:   v.CreatedAt,
		StartedAt:   v.StartedAt,
		FinishedAt:  v.FinishedAt,
		Image:       &runtimeapi.ImageSpec{Image: v.ImageName},
		ImageRef:    v.ImageRef,
		ImageId:     v.ImageRef,
		Labels:      v.Config.GetLabels(),
		Annotations: v.Config.GetAnnotations(),
		Mounts:      v.Config.GetMounts(),
		LogPath:     v.LogPath,
		Resources:   &runtimeapi.ContainerResources{Linux: v.AppliedResources()},
	}
	if v.State == lifecycle.ContainerExited {
		st.ExitCode, st.Reason, st.Message = v.ExitCode, v.Reason, v.Message
	}
	return st
}
