package cri

import (
	"context"
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus reports the sandbox; verbose info names the pod's
// domain, its libvirt XML and its disks.
func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	rec, cfg := sb.rec, sb.config
	sb.mu.Unlock()
	resp := &runtimeapi.PodSandboxStatusResponse{Status: sandboxStatus(rec, cfg)}
	if req.GetVerbose() {
		info := map[string]any{"handler": rec.Handler, "name": rec.Name}
		if rec.Network != nil {
			info["network"] = map[string]any{
				"netns": rec.Network.NetNS, "cniConfig": rec.Network.ConfFile, "interfaces": rec.Network.Interfaces,
				"cniResult": rec.Network.Result, "torndown": rec.NetworkDown,
			}
		}
		var vms []map[string]any
		for _, c := range s.state.containersOf(rec.ID) {
			crec, _ := c.snapshot()
			vm := map[string]any{
				"containerID": crec.ID, "state": crec.State, "domain": crec.Domain,
				"disks":        map[string]string{"root": crec.RootDisk, "image": s.images.Path(crec.ImageRef)},
				"serialSocket": serialSocket(crec.RunDir), "vm": crec.VM,
			}
			if xml, err := s.libvirt.XML(ctx, crec.Domain); err == nil {
				vm["domainXML"] = xml
			}
			vms = append(vms, vm)
		}
		info["vms"] = vms
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

func sandboxStatus(rec sandboxRecord, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxStatus {
	state := runtimeapi.PodSandboxState_SANDBOX_READY
	if rec.State != sandboxReady {
		state = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	return &runtimeapi.PodSandboxStatus{
		Id:        rec.ID,
		Metadata:  cfg.GetMetadata(),
		State:     state,
		CreatedAt: rec.CreatedAt,
		Network:   sandboxNetworkStatus(rec),
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD,
		}}},
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: rec.Handler,
	}
}

// sandboxNetworkStatus reports the pod's IPs (IPv4 first) while its
// network is up.
func sandboxNetworkStatus(rec sandboxRecord) *runtimeapi.PodSandboxNetworkStatus {
	st := &runtimeapi.PodSandboxNetworkStatus{}
	att := sandboxNetwork(rec)
	if att == nil {
		return st
	}
	for i, ip := range att.IPs() {
		if i == 0 {
			st.Ip = ip.String()
			continue
		}
		st.AdditionalIps = append(st.AdditionalIps, &runtimeapi.PodIP{Ip: ip.String()})
	}
	return st
}
