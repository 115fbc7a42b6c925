package cri

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/containerd/errdefs"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/logging"
)

// Pod annotations the kubelet's runtimes read for the bandwidth plugin.
const (
	annIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	annEgressBandwidth  = "kubernetes.io/egress-bandwidth"
)

// podNetworkInfo is what CNI gets to know about the pod: identity,
// hostPort mappings and bandwidth limits.
func podNetworkInfo(cfg *runtimeapi.PodSandboxConfig) (cni.PodInfo, error) {
	m := cfg.GetMetadata()
	pod := cni.PodInfo{Namespace: m.GetNamespace(), Name: m.GetName(), UID: m.GetUid()}
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue
		}
		pod.PortMappings = append(pod.PortMappings, cni.PortMapping{
			HostPort: pm.GetHostPort(), ContainerPort: pm.GetContainerPort(),
			Protocol: strings.ToLower(pm.GetProtocol().String()), HostIP: pm.GetHostIp(),
		})
	}
	bw := &cni.Bandwidth{}
	for key, rate := range map[string]*uint64{annIngressBandwidth: &bw.IngressRate, annEgressBandwidth: &bw.EgressRate} {
		v, ok := cfg.GetAnnotations()[key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			return pod, fmt.Errorf("annotation %s: %q is not a positive quantity of bits per second (e.g. 10M): %w", key, v, errdefs.ErrInvalidArgument)
		}
		*rate = uint64(q.Value())
	}
	if bw.IngressRate > 0 {
		bw.IngressBurst = math.MaxUint32
	}
	if bw.EgressRate > 0 {
		bw.EgressBurst = math.MaxUint32
	}
	if bw.IngressRate > 0 || bw.EgressRate > 0 {
		pod.Bandwidth = bw
	}
	return pod, nil
}

// guestNetworkInfo is what the DHCP servers tell the guest besides its
// addresses: the pod's hostname and DNS config.
func guestNetworkInfo(cfg *runtimeapi.PodSandboxConfig) cni.Guest {
	g := cni.Guest{Hostname: podHostname(cfg)}
	if d := cfg.GetDnsConfig(); d != nil {
		g.DNSServers, g.DNSSearches = d.GetServers(), d.GetSearches()
	}
	return g
}

// podHostname is the guest's hostname: the pod's, else its name.
func podHostname(cfg *runtimeapi.PodSandboxConfig) string {
	if h := cfg.GetHostname(); h != "" {
		return h
	}
	return cfg.GetMetadata().GetName()
}

// teardownNetwork tears the sandbox's network down once and records it.
// The caller holds sb.op.
func (s *Service) teardownNetwork(ctx context.Context, sb *sandbox) error {
	sb.mu.Lock()
	rec := sb.rec
	sb.mu.Unlock()
	if rec.Network == nil || rec.NetworkDown || s.net == nil {
		return nil
	}
	if err := s.net.Teardown(ctx, rec.Network); err != nil {
		return fmt.Errorf("tear down the network of pod sandbox %s: %w", rec.ID, err)
	}
	rec.NetworkDown = true
	if err := s.state.saveSandbox(rec); err != nil {
		return err
	}
	sb.mu.Lock()
	sb.rec = rec
	sb.mu.Unlock()
	logging.From(ctx).Info("pod network torn down", logging.KeySandboxID, rec.ID)
	return nil
}

// sandboxNetwork returns the sandbox's live network, nil when it has none
// or it is torn down.
func sandboxNetwork(rec sandboxRecord) *cni.Attachment {
	if rec.NetworkDown {
		return nil
	}
	return rec.Network
}

// cloudInitNICs describes the pod's interfaces for the guest's cloud-init
// network-config: the same addresses, gateways, routes and MTU the DHCP
// servers hand out, so a guest without DHCP gets them too.
func cloudInitNICs(att *cni.Attachment) []cloudinit.NIC {
	var out []cloudinit.NIC
	for _, ifc := range att.Interfaces {
		n := cloudinit.NIC{MAC: ifc.MAC, MTU: ifc.MTU}
		for _, a := range ifc.Addresses {
			n.Addresses = append(n.Addresses, a.Prefix)
			switch {
			case !a.Gateway.IsValid():
			case a.Gateway.Is4() && !n.Gateway4.IsValid():
				n.Gateway4 = a.Gateway
			case a.Gateway.Is6() && !n.Gateway6.IsValid():
				n.Gateway6 = a.Gateway
			}
		}
		for _, r := range ifc.Routes {
			via := r.GW
			if !via.IsValid() {
				via = n.Gateway4
				if r.Dst.Addr().Is6() {
					via = n.Gateway6
				}
			}
			if r.Dst.Bits() == 0 && (via == n.Gateway4 || via == n.Gateway6) {
				continue // the default route is the gateway already
			}
			if !via.IsValid() {
				continue
			}
			n.Routes = append(n.Routes, cloudinit.Route{To: r.Dst, Via: via})
		}
		out = append(out, n)
	}
	return out
}
