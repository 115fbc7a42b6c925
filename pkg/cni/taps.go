package cni

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vmpod/vmpod/pkg/cni/nsenter"
)

// nsHandle opens a netlink handle inside the netns at path.
func nsHandle(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in network namespace %s: %w", path, err)
	}
	return h, nil
}

// wireNetNS readies each CNI interface in the netns for its VM: it records
// the pod MAC and MTU, removes the interface's addresses and routes (the
// guest holds the pod IP), gives the veth a fresh MAC (the guest keeps the
// pod's) and makes it a port of a new bridge with MAC learning off.
// Learning is off on the veth port because CNI bridges run the veth's
// host end in hairpin mode: the VM's broadcasts come back through the veth
// and would teach the in-netns bridge that the VM's MAC lives there.
func wireNetNS(att *Attachment) error {
	h, err := nsHandle(att.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	for i := range att.Interfaces {
		ifc := &att.Interfaces[i]
		link, err := h.LinkByName(ifc.Name)
		if err != nil {
			return fmt.Errorf("find pod interface %s in %s: %w", ifc.Name, att.NetNS, err)
		}
		if ifc.MAC == "" {
			ifc.MAC = link.Attrs().HardwareAddr.String()
		}
		ifc.MTU = link.Attrs().MTU
		if err := disableIPv6(att.NetNS, ifc.Name); err != nil {
			return err
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if err := h.AddrDel(link, &a); err != nil {
				return fmt.Errorf("move address %s from %s to the VM: %w", a.IPNet, ifc.Name, err)
			}
		}
		routes, _ := h.RouteList(link, netlink.FAMILY_ALL)
		for _, r := range routes {
			h.RouteDel(&r) // routes mostly vanish with the addresses
		}
		mac, err := randomMAC()
		if err != nil {
			return err
		}
		if err := h.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("give %s a new MAC: %w", ifc.Name, err)
		}
		br, err := ensureBridge(h, ifc.Bridge, ifc.MTU)
		if err != nil {
			return err
		}
		if err := disableIPv6(att.NetNS, ifc.Bridge); err != nil {
			return err
		}
		if err := h.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("add %s to bridge %s: %w", ifc.Name, ifc.Bridge, err)
		}
		if err := h.LinkSetLearning(link, false); err != nil {
			return fmt.Errorf("turn off MAC learning on %s: %w", ifc.Name, err)
		}
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("bring up bridge %s: %w", ifc.Bridge, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %s: %w", ifc.Name, err)
		}
	}
	return nil
}

func ensureBridge(h *netlink.Handle, name string, mtu int) (netlink.Link, error) {
	if l, err := h.LinkByName(name); err == nil {
		return l, nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
	if err := h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	return h.LinkByName(name)
}

// disableIPv6 keeps the netns's own stack off the pod's L2 segment for
// IPv6 (no link-local address, no DAD or router solicitations from the
// bridge ports); the guest does the pod's IPv6. A kernel without IPv6 has
// no such file, which is fine.
func disableIPv6(nsPath, ifName string) error {
	return nsenter.Run(nsPath, func() error {
		err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", ifName, "disable_ipv6"), []byte("1"), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable IPv6 on %s: %w", ifName, err)
		}
		return nil
	})
}

// randomMAC returns a random unicast, locally administered MAC.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = mac[0]&0xfe | 0x02
	return mac, nil
}

// PrepareVM makes fresh taps for a VM boot in the host netns, where
// libvirt opens them by name when the domain starts (type ethernet,
// managed='no'). A previous boot's taps (in the netns or the host) are
// deleted first, with the DHCP servers bound to them.
func (m *Manager) PrepareVM(att *Attachment) error {
	m.dhcp.stop(att.SandboxID)
	for _, ifc := range att.Interfaces {
		if err := deleteTap(att.NetNS, ifc.Tap); err != nil {
			return err
		}
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: ifc.Tap, MTU: ifc.MTU},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("create tap %s: %w", ifc.Tap, err)
		}
		for _, f := range tap.Fds {
			f.Close()
		}
	}
	return nil
}

// PlugVM moves a started (paused) VM's taps into the pod's netns, adds
// them to the bridges and starts the DHCP servers. QEMU keeps its tap fds
// across the move. The anti-spoofing rules (guard.go) are installed first,
// so no frame of the VM reaches a bridge unfiltered; if they cannot be,
// PlugVM fails and the VM stays off the network.
func (m *Manager) PlugVM(att *Attachment, guest Guest) error {
	if err := installGuard(att); err != nil {
		return err
	}
	ns, err := netns.GetFromPath(att.NetNS)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", att.NetNS, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in network namespace %s: %w", att.NetNS, err)
	}
	defer h.Close()
	for _, ifc := range att.Interfaces {
		tap, err := netlink.LinkByName(ifc.Tap)
		if err != nil {
			return fmt.Errorf("find tap %s: %w", ifc.Tap, err)
		}
		if err := netlink.LinkSetNsFd(tap, int(ns)); err != nil {
			return fmt.Errorf("move tap %s into %s: %w", ifc.Tap, att.NetNS, err)
		}
		if tap, err = h.LinkByName(ifc.Tap); err != nil {
			return fmt.Errorf("find tap %s in %s: %w", ifc.Tap, att.NetNS, err)
		}
		if err := disableIPv6(att.NetNS, ifc.Tap); err != nil {
			return err
		}
		br, err := h.LinkByName(ifc.Bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s in %s: %w", ifc.Bridge, att.NetNS, err)
		}
		if err := h.LinkSetMaster(tap, br); err != nil {
			return fmt.Errorf("add tap %s to bridge %s: %w", ifc.Tap, ifc.Bridge, err)
		}
		if err := h.LinkSetUp(tap); err != nil {
			return fmt.Errorf("bring up tap %s: %w", ifc.Tap, err)
		}
	}
	return m.serveDHCP(att, guest)
}

// UnplugVM stops a VM's DHCP servers, deletes its taps and its
// anti-spoofing rules (after a failed boot; a stopped VM's taps and rules
// stay until the next boot or the teardown).
func (m *Manager) UnplugVM(att *Attachment) error {
	m.dhcp.stop(att.SandboxID)
	var errs []error
	for _, ifc := range att.Interfaces {
		errs = append(errs, deleteTap(att.NetNS, ifc.Tap))
	}
	errs = append(errs, removeGuard(att.NetNS))
	return errors.Join(errs...)
}

// deleteTap deletes tap name from the netns and from the host netns;
// missing is fine.
func deleteTap(nsPath, name string) error {
	if isNetNS(nsPath) {
		h, err := nsHandle(nsPath)
		if err != nil {
			return err
		}
		defer h.Close()
		if l, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(l); err != nil {
				return fmt.Errorf("delete tap %s in %s: %w", name, nsPath, err)
			}
		}
	}
	if l, err := netlink.LinkByName(name); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete tap %s: %w", name, err)
		}
	}
	return nil
}

// Usage is one pod interface's traffic counters, as the pod sees them.
type Usage struct {
	Name                                 string
	RxBytes, RxErrors, TxBytes, TxErrors uint64
}

// Usage reads the counters of the pod's interfaces (the veths in the
// netns: what they receive from the cluster is what the VM receives; DHCP
// between vmpod and the VM is not counted).
func (m *Manager) Usage(att *Attachment) ([]Usage, error) {
	h, err := nsHandle(att.NetNS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []Usage
	for _, ifc := range att.Interfaces {
		l, err := h.LinkByName(ifc.Name)
		if err != nil {
			return nil, fmt.Errorf("read counters of %s: %w", ifc.Name, err)
		}
		st := l.Attrs().Statistics
		if st == nil {
			continue
		}
		out = append(out, Usage{Name: ifc.Name, RxBytes: st.RxBytes, RxErrors: st.RxErrors, TxBytes: st.TxBytes, TxErrors: st.TxErrors})
	}
	return out, nil
}

// restoreAddresses puts the pod's addresses back on its interfaces in the
// netns before CNI DEL: the guest held them, and plugins such as bridge
// find what to undo (its ipMasq rules) from the interface's addresses.
// Nothing is left to do when the netns is gone.
func restoreAddresses(att *Attachment) error {
	if !isNetNS(att.NetNS) {
		return nil
	}
	h, err := nsHandle(att.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, ifc := range att.Interfaces {
		link, err := h.LinkByName(ifc.Name)
		if err != nil {
			continue // already gone: DEL has nothing to find there either
		}
		for _, a := range ifc.Addresses {
			if a.Prefix.Addr().Is6() {
				if err := enableIPv6(att.NetNS, ifc.Name); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), a.Prefix.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := h.AddrReplace(link, addr); err != nil {
				errs = append(errs, fmt.Errorf("put %s back on %s: %w", a.Prefix, ifc.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// enableIPv6 undoes disableIPv6 on one interface.
func enableIPv6(nsPath, ifName string) error {
	return nsenter.Run(nsPath, func() error {
		return os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", ifName, "disable_ipv6"), []byte("0"), 0o644)
	})
}
