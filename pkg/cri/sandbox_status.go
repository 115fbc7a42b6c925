package cri

import (
	"context"
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// PodSandboxStatus reports the sandbox; verbose info names the pod's
// network, domain, its libvirt XML and its disks.
func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	v, err := s.pods.Sandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: sandboxStatus(v)}
	if req.GetVerbose() {
		info, err := s.pods.SandboxInfo(ctx, v.ID)
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

// sandboxState maps a sandbox's state: only READY is ready.
func sandboxState(v lifecycle.SandboxView) runtimeapi.PodSandboxState {
	if v.Ready() {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// sandboxStatus is a sandbox's CRI status, the network (the pod's IPs,
// IPv4 first, while its network is up) included.
func sandboxStatus(v lifecycle.SandboxView) *runtimeapi.PodSandboxStatus {
	netst := &runtimeapi.PodSandboxNetworkStatus{}
	for i, ip := range v.IPs() {
		if i == 0 {
			netst.Ip = ip.String()
			continue
		}
		netst.AdditionalIps = append(netst.AdditionalIps, &runtimeapi.PodIP{Ip: ip.String()})
	}
	return &runtimeapi.PodSandboxStatus{
		Id:        v.ID,
		Metadata:  v.Config.GetMetadata(),
		State:     sandboxState(v),
		CreatedAt: v.CreatedAt,
		Network:   netst,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD,
		}}},
		Labels:         v.Config.GetLabels(),
		Annotations:    v.Config.GetAnnotations(),
		RuntimeHandler: v.Handler,
	}
}
