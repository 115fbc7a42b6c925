// Package cni owns a VM pod's network: the pod's network namespace, the
// CNI ADD/DEL calls through libcni (each bounded by Config.Timeout, a hung
// plugin killed with its process group: exec.go), the wiring that hands
// each CNI interface to the VM (a tap bridged to the pod's veth inside the
// netns, the veth's IP moved to the guest), the anti-spoofing rules on
// each tap (guard.go) and the per-VM DHCP servers that give the guest the
// pod's addresses.
//
// The life of a pod's network:
//
//	Plan ──> Setup (netns, CNI ADD, in-netns bridges) ──> [per VM boot:
//	PrepareVM (taps in the host netns) ──> domain started paused ──>
//	PlugVM (anti-spoofing rules, taps into the netns and the bridges,
//	DHCP) ──> guest resumed] ──> Teardown (DHCP, taps, rules, CNI DEL,
//	netns)
//
// Every step after Plan is idempotent, so a retried or recovered teardown
// finishes a half-done one. After a restart, ServeDHCP re-installs a
// running VM's rules and restarts its DHCP servers.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vmpod/vmpod/pkg/failpoint"
)

// Config says where CNI configs and plugins are.
type Config struct {
	// ConfDir holds the network configs; the first by file name is used.
	ConfDir string
	// BinDirs are searched for plugin binaries.
	BinDirs []string
	// CacheDir is libcni's result cache (vmpod keeps it under its state
	// dir so CNI DEL gets the ADD result as prevResult).
	CacheDir string
	// Timeout bounds each CNI operation, the ADD or the DEL of the whole
	// config list (config key cni_timeout); 0 means DefaultTimeout. A
	// plugin still running then is killed with its process group and the
	// operation fails with an error of class errdefs.ErrUnavailable.
	Timeout time.Duration
}

// Manager sets pods' networks up and tears them down. Its methods are safe
// for concurrent use on different sandboxes.
type Manager struct {
	cfg     Config
	timeout time.Duration
	cni     *libcni.CNIConfig
	log     *slog.Logger
	dhcp    *dhcpServers
	// Timing collects how long the last operations took, by step, for the
	// benchmark and the logs.
	timing *timings
}

// NewManager returns a Manager over cfg.
func NewManager(cfg Config, log *slog.Logger) *Manager {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Manager{
		cfg:     cfg,
		timeout: timeout,
		cni:     libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, &pluginExec{log: log}),
		log:     log,
		dhcp:    newDHCPServers(log),
		timing:  newTimings(),
	}
}

// Ready reports whether a usable network config exists; the error says
// what is missing (it wraps errdefs.ErrFailedPrecondition).
func (m *Manager) Ready() error {
	_, _, err := loadConfList(m.cfg.ConfDir)
	return err
}

// Orphan is what can be known of the network of a sandbox whose record is
// lost: its netns. Its Teardown deletes the netns, and with it the links
// inside; without the config and the ADD result there is no CNI DEL, so
// what plugins keep outside the netns (IPAM reservations, iptables rules)
// stays.
func Orphan(sandboxID string) *Attachment {
	return &Attachment{SandboxID: sandboxID, NetNS: netnsPath(sandboxID)}
}

// Plan picks the network config for a new sandbox and returns its
// attachment, before anything is created; the caller stores it so a crash
// in Setup leaves enough to tear down.
func (m *Manager) Plan(sandboxID string, pod PodInfo) (*Attachment, error) {
	list, file, err := loadConfList(m.cfg.ConfDir)
	if err != nil {
		return nil, err
	}
	att := &Attachment{
		SandboxID: sandboxID,
		NetNS:     netnsPath(sandboxID),
		ConfFile:  file,
		ConfList:  list.Bytes,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sandboxID},
			{"K8S_POD_UID", pod.UID},
		},
		CapabilityArgs: map[string]any{},
	}
	if len(pod.PortMappings) > 0 {
		att.CapabilityArgs["portMappings"] = pod.PortMappings
	}
	if pod.Bandwidth != nil {
		att.CapabilityArgs["bandwidth"] = pod.Bandwidth
	}
	return att, nil
}

func (a *Attachment) runtimeConf(netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    a.SandboxID,
		NetNS:          netns,
		IfName:         "eth0",
		Args:           a.Args,
		CapabilityArgs: a.CapabilityArgs,
	}
}

// Setup creates the netns, runs CNI ADD (bounded by Config.Timeout) and
// readies each interface for its VM NIC: the veth's addresses and routes
// go (the guest holds them now),
// the veth gets a new MAC (the guest keeps the pod's) and joins a bridge
// that the VM's tap will join. persist (may be nil) is called once the ADD
// result is in att, before the addresses move, so that a teardown after a
// crash knows them. On error the caller runs Teardown.
func (m *Manager) Setup(ctx context.Context, att *Attachment, persist func() error) error {
	list, err := confListFromBytes(att.ConfList)
	if err != nil {
		return fmt.Errorf("parse stored CNI config: %w", err)
	}
	t0 := time.Now()
	if err := createNetNS(att.NetNS); err != nil {
		return err
	}
	failpoint.Hit("runp/netns-created")
	t1 := time.Now()
	res, err := m.add(ctx, list, att)
	if err != nil {
		return err
	}
	failpoint.Hit("runp/cni-added")
	t2 := time.Now()
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("CNI ADD of network %q returned a result vmpod cannot read: %w", list.Name, err)
	}
	if att.Result, err = json.Marshal(r); err != nil {
		return err
	}
	ifcs, err := interfacesFromResult(r, att)
	if err != nil {
		return fmt.Errorf("CNI network %q: %w", list.Name, err)
	}
	att.Interfaces = ifcs
	if persist != nil {
		if err := persist(); err != nil {
			return err
		}
	}
	failpoint.Hit("runp/result-stored")
	if err := wireNetNS(att); err != nil {
		return err
	}
	failpoint.Hit("runp/network-wired")
	m.timing.record("setup", t1.Sub(t0)+time.Since(t2), t2.Sub(t1))
	return nil
}

// interfacesFromResult lists the result's interfaces inside the netns with
// their addresses and routes, naming each one's tap and bridge.
func interfacesFromResult(r *current.Result, att *Attachment) ([]Interface, error) {
	var out []Interface
	index := map[int]int{} // result interface index -> out index
	for i, ifc := range r.Interfaces {
		if ifc.Sandbox == "" {
			continue
		}
		n := len(out)
		index[i] = n
		out = append(out, Interface{Name: ifc.Name, MAC: ifc.Mac, Tap: tapName(att.SandboxID, n), Bridge: bridgeName(n)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the CNI result puts no interface in the pod's network namespace")
	}
	for _, ip := range r.IPs {
		n := 0 // no interface index: the first sandbox interface
		if ip.Interface != nil {
			k, ok := index[*ip.Interface]
			if !ok {
				continue // an address on a host-side interface
			}
			n = k
		}
		p, ok := prefixFromIPNet(ip.Address)
		if !ok {
			return nil, fmt.Errorf("address %s in the CNI result is not valid", ip.Address.String())
		}
		gw, _ := netip.AddrFromSlice(ip.Gateway)
		out[n].Addresses = append(out[n].Addresses, Address{Prefix: p, Gateway: gw.Unmap()})
	}
	for _, rt := range r.Routes {
		dst, ok := prefixFromIPNet(rt.Dst)
		if !ok {
			continue
		}
		gw, _ := netip.AddrFromSlice(rt.GW)
		gw = gw.Unmap()
		k := routeOwner(out, dst, gw)
		out[k].Routes = append(out[k].Routes, Route{Dst: dst.Masked(), GW: gw})
	}
	return out, nil
}

// routeOwner picks the interface a route belongs to: the one whose subnet
// holds its gateway, else the first with an address of its family.
func routeOwner(ifcs []Interface, dst netip.Prefix, gw netip.Addr) int {
	if gw.IsValid() {
		for i, ifc := range ifcs {
			for _, a := range ifc.Addresses {
				if a.Prefix.Masked().Contains(gw) {
					return i
				}
			}
		}
	}
	for i, ifc := range ifcs {
		for _, a := range ifc.Addresses {
			if a.Prefix.Addr().Is4() == dst.Addr().Is4() {
				return i
			}
		}
	}
	return 0
}

func prefixFromIPNet(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// tapName is the tap of a sandbox's n-th interface: unique on the host
// (it is created in the host netns) and within IFNAMSIZ.
func tapName(sandboxID string, n int) string {
	id := sandboxID
	if len(id) > 10 {
		id = id[:10]
	}
	return "vmt" + id + fmt.Sprintf("%02x", n)
}

// bridgeName is the in-netns bridge of the n-th interface.
func bridgeName(n int) string { return "vmbr" + strconv.Itoa(n) }

// Teardown undoes Setup and every VM's wiring: DHCP servers, taps, the
// anti-spoofing rules, CNI DEL (with the stored config and args; libcni
// passes the cached ADD result; bounded by Config.Timeout), the netns.
// Each step tolerates what is already gone, so a retry finishes a
// half-done teardown; a failed DEL of a completed ADD keeps the netns for
// that retry.
func (m *Manager) Teardown(ctx context.Context, att *Attachment) error {
	t0 := time.Now()
	m.dhcp.stop(att.SandboxID)
	var errs []error
	for _, ifc := range att.Interfaces {
		if err := deleteTap(att.NetNS, ifc.Tap); err != nil {
			errs = append(errs, err)
		}
	}
	failpoint.Hit("teardown/taps-deleted")
	if err := removeGuard(att.NetNS); err != nil {
		errs = append(errs, err)
	}
	failpoint.Hit("teardown/guard-removed")
	// Plugins read the pod's addresses off its interface at DEL (the
	// bridge plugin finds its ipMasq rules that way): give them back.
	if err := restoreAddresses(att); err != nil {
		m.log.Warn("restoring the pod's addresses for CNI DEL", "sandbox_id", att.SandboxID, "err", err)
	}
	var cniTime time.Duration
	delFailed := false
	if len(att.ConfList) > 0 {
		list, err := confListFromBytes(att.ConfList)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse stored CNI config: %w", err))
		} else {
			ns := att.NetNS
			if !isNetNS(ns) {
				// The spec lets DEL run without a netns; plugins then
				// release what they hold outside it (IPs, iptables rules).
				ns = ""
			}
			t1 := time.Now()
			if err := m.del(ctx, list, att, ns); err != nil {
				errs = append(errs, err)
				delFailed = true
			}
			cniTime = time.Since(t1)
			failpoint.Hit("teardown/cni-deleted")
		}
	}
	// After a failed DEL of a completed ADD the netns stays for the retry
	// (the kubelet retries StopPodSandbox until it succeeds): without it,
	// the retried DEL cannot find what the plugins keyed on the pod's
	// interface (the bridge plugin's ipMasq rules). Otherwise the netns
	// goes even when DEL failed: the links in it die with it.
	if delFailed && len(att.Result) > 0 && isNetNS(att.NetNS) {
		m.log.Warn("keeping the pod's network namespace for a retried CNI DEL", "sandbox_id", att.SandboxID, "netns", att.NetNS)
	} else if err := deleteNetNS(att.NetNS); err != nil {
		errs = append(errs, err)
	}
	failpoint.Hit("teardown/netns-deleted")
	m.timing.record("teardown", time.Since(t0)-cniTime, cniTime)
	return errors.Join(errs...)
}

// LeakCheck lists what of a sandbox's network still exists on the host
// (netns and its anti-spoofing table, host-side taps); tests and
// benchmarks use it.
func LeakCheck(att *Attachment) []string {
	var left []string
	if fileExists(att.NetNS) {
		left = append(left, "netns "+att.NetNS)
		if isNetNS(att.NetNS) && hasGuard(att.NetNS) {
			left = append(left, "nftables table bridge "+guardTable+" in "+att.NetNS)
		}
	}
	for _, ifc := range att.Interfaces {
		if _, err := net.InterfaceByName(ifc.Tap); err == nil {
			left = append(left, "tap "+ifc.Tap)
		}
	}
	return left
}

// resultDNS returns the name servers of a stored CNI result.
func resultDNS(raw []byte) []string {
	var r current.Result
	if json.Unmarshal(raw, &r) != nil {
		return nil
	}
	return r.DNS.Nameservers
}

// lastHost returns the highest host address of an IPv4 prefix.
func lastHost(p netip.Prefix) net.IP {
	ip := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v |= host
	if host > 1 {
		v--
	}
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}
