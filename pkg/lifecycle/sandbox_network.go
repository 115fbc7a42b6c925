package lifecycle

import (
	"context"
	"fmt"
	"math"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
)

// podNetworkInfo is what CNI gets to know about the pod: identity,
// hostPort mappings and the bandwidth limits of its options.
func podNetworkInfo(cfg *runtimeapi.PodSandboxConfig, opts podspec.NetworkOptions) cni.PodInfo {
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
	if opts.IngressRate > 0 || opts.EgressRate > 0 {
		bw := &cni.Bandwidth{IngressRate: opts.IngressRate, EgressRate: opts.EgressRate}
		if bw.IngressRate > 0 {
			bw.IngressBurst = math.MaxUint32
		}
		if bw.EgressRate > 0 {
			bw.EgressBurst = math.MaxUint32
		}
		pod.Bandwidth = bw
	}
	return pod
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

// maxHostname is the longest hostname (a DNS label) a guest accepts.
const maxHostname = 63

// podHostname is the guest's hostname: the pod's, else its name, cut to
// 63 characters without a trailing '-' or '.', as the kubelet cuts a pod
// name that becomes a hostname (a guest refuses a longer one).
func podHostname(cfg *runtimeapi.PodSandboxConfig) string {
	h := cfg.GetHostname()
	if h == "" {
		h = cfg.GetMetadata().GetName()
	}
	if len(h) > maxHostname {
		h = strings.TrimRight(h[:maxHostname], "-.")
	}
	return h
}

// teardownNetwork tears the sandbox's network down once and records it.
// The caller holds sb.op.
func (c *Controller) teardownNetwork(ctx context.Context, sb *sandbox) error {
	rec := sb.Get()
	if rec.Network == nil || rec.NetworkDown || c.net == nil {
		return nil
	}
	if err := c.net.Teardown(ctx, rec.Network); err != nil {
		return fmt.Errorf("tear down the network of pod sandbox %s: %w", rec.ID, err)
	}
	if _, err := sb.Update(func(r *SandboxRecord) error { r.NetworkDown = true; return nil }); err != nil {
		return err
	}
	failpoint.Hit("stopp/network-down")
	logging.From(ctx).Info("pod network torn down", logging.KeySandboxID, rec.ID)
	return nil
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
