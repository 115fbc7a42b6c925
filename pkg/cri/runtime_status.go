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
	h := s.pods.Health(ctx)
	runtimeCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if h.RuntimeErr != nil {
		runtimeCond.Status = false
		runtimeCond.Reason = "LibvirtUnavailable"
		runtimeCond.Message = h.RuntimeErr.Error()
		logging.From(ctx).Warn("runtime not ready", logging.KeyErr, h.RuntimeErr)
	}
	if runtimeCond.Status && h.HostProblem != "" {
		// Ready, but say why VM creation will be slow.
		runtimeCond.Reason = "HostMisconfigured"
		runtimeCond.Message = h.HostProblem
	}
	networkCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if h.NetworkErr != nil {
		networkCond.Status = false
		networkCond.Reason = "NetworkPluginNotReady"
		networkCond.Message = strings.TrimSuffix(h.NetworkErr.Error(), ": "+errdefs.ErrFailedPrecondition.Error())
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
			"libvirt":              h.Libvirt,
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
