package cri

import (
	"context"
	"encoding/json"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus reports the container, checking a running VM's domain
// first so a guest that just powered off shows EXITED. Verbose info has the
// domain name, its XML and the disk paths.
func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	s.refresh(ctx, c)
	rec, cfg := c.snapshot()
	resp := &runtimeapi.ContainerStatusResponse{Status: containerStatus(rec, cfg)}
	if req.GetVerbose() {
		info := map[string]any{
			"sandboxID": rec.SandboxID, "domain": rec.Domain, "vm": rec.VM,
			"disks":        map[string]string{"root": rec.RootDisk, "image": s.images.Path(rec.ImageRef)},
			"serialSocket": serialSocket(rec.RunDir),
		}
		if xml, err := s.libvirt.XML(ctx, rec.Domain); err == nil {
			info["domainXML"] = xml
		}
		if rec.State == containerRunning {
			info["guestAgent"] = s.agentInfo(ctx, rec.Domain)
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
	case containerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case containerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case containerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func containerStatus(rec containerRecord, cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:          rec.ID,
		Metadata:    cfg.GetMetadata(),
		State:       criState(rec.State),
		CreatedAt:   rec.CreatedAt,
		StartedAt:   rec.StartedAt,
		FinishedAt:  rec.FinishedAt,
		Image:       &runtimeapi.ImageSpec{Image: rec.ImageName},
		ImageRef:    rec.ImageRef,
		ImageId:     rec.ImageRef,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      cfg.GetMounts(),
		LogPath:     rec.LogPath,
		Resources:   &runtimeapi.ContainerResources{Linux: decodeResources(rec.Resources, cfg.GetLinux().GetResources())},
	}
	if rec.State == containerExited {
		st.ExitCode, st.Reason, st.Message = rec.ExitCode, rec.Reason, rec.Message
	}
	return st
}

// agentInfo says whether the guest agent answers and which version it is.
// qemu-ga starts late in a real guest's boot: "not connected" early on is
// normal, not an error.
func (s *Service) agentInfo(ctx context.Context, domain string) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var info struct {
		Version string `json:"version"`
	}
	if err := s.agent(ctx, domain, map[string]string{"execute": "guest-info"}, &info); err != nil {
		return map[string]any{"connected": false, "error": err.Error()}
	}
	return map[string]any{"connected": true, "version": info.Version}
}
