package cri

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/containerd/errdefs"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// Status reports RuntimeReady from a live libvirt call and NetworkReady
// from the CNI config dir (false, with the reason, while it has no usable
// network config).
func (s *Service) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	runtimeCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	info, err := s.libvirt.Ping(ctx)
	if err != nil {
		runtimeCond.Status = false
		runtimeCond.Reason = "LibvirtUnavailable"
		runtimeCond.Message = err.Error()
		logging.From(ctx).Warn("runtime not ready", logging.KeyErr, err)
	}
	if runtimeCond.Status && s.hostCheck != "" {
		// Ready, but say why VM creation will be slow.
		runtimeCond.Reason = "HostMisconfigured"
		runtimeCond.Message = s.hostCheck
	}
	networkCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.net != nil {
		if err := s.net.Ready(); err != nil {
			networkCond.Status = false
			networkCond.Reason = "NetworkPluginNotReady"
			networkCond.Message = strings.TrimSuffix(err.Error(), ": "+errdefs.ErrFailedPrecondition.Error())
		}
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeCond, networkCond}},
		RuntimeHandlers: []*runtimeapi.RuntimeHandler{
			{Name: "", Features: &runtimeapi.RuntimeHandlerFeatures{}},
		},
		Features: &runtimeapi.RuntimeFeatures{},
	}
	if req.GetVerbose() {
		b, _ := json.Marshal(map[string]any{
			"libvirt":              info,
			"libvirtURI":           s.cfg.LibvirtURI,
			"stateDir":             s.cfg.StateDir,
			"imageTranslationsDir": s.cfg.ImageTranslationsDir,
			"cgroupDriver":         s.cfg.CgroupDriver,
			"podCIDR":              s.getPodCIDR(),
		})
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}
