package cni

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vmpod/vmpod/pkg/cni/dhcp"
)

// LeaseTime is the DHCP lease the guests get: long, so a guest keeps its
// address through a vmpod restart or upgrade even if it could not renew.
const LeaseTime = 7 * 24 * time.Hour

// Guest is what the DHCP servers tell a VM besides its addresses.
type Guest struct {
	// Hostname is the pod's hostname (option 12).
	Hostname string
	// DNSServers and DNSSearches come from the sandbox's DNSConfig (the
	// cluster DNS); when empty, the CNI result's DNS is used.
	DNSServers  []string
	DNSSearches []string
}

// dhcpServers are the running DHCP servers by sandbox.
type dhcpServers struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string][]*dhcp.Server
}

func newDHCPServers(log *slog.Logger) *dhcpServers {
	return &dhcpServers{log: log, by: map[string][]*dhcp.Server{}}
}

func (d *dhcpServers) stop(sandboxID string) {
	d.mu.Lock()
	servers := d.by[sandboxID]
	delete(d.by, sandboxID)
	d.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
}

func (d *dhcpServers) add(sandboxID string, s *dhcp.Server) {
	d.mu.Lock()
	d.by[sandboxID] = append(d.by[sandboxID], s)
	d.mu.Unlock()
}

// ServeDHCP (re)starts the DHCP servers of a VM whose taps are plugged and
// re-installs its anti-spoofing rules. vmpod calls it after a restart for
// every running VM, so renewals keep getting answers and a VM started by
// a vmpod without the rules (or whose rules were flushed) gets them.
func (m *Manager) ServeDHCP(att *Attachment, guest Guest) error {
	return errors.Join(installGuard(att), m.serveDHCP(att, guest))
}

// serveDHCP (re)starts the DHCP servers of a VM: one per interface with an
// IPv4 address, listening on the tap inside the netns and answering only
// the interface's MAC.
func (m *Manager) serveDHCP(att *Attachment, guest Guest) error {
	m.dhcp.stop(att.SandboxID)
	var dnsResult []string
	if len(att.Result) > 0 {
		dnsResult = resultDNS(att.Result)
	}
	for _, ifc := range att.Interfaces {
		lease, ok, err := leaseFor(ifc, guest, dnsResult)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		srv, err := dhcp.Start(dhcp.Config{
			NetNSPath: att.NetNS, Interface: ifc.Tap, Lease: lease,
			Logger: m.log.With("sandbox_id", att.SandboxID, "interface", ifc.Name),
		})
		if err != nil {
			m.dhcp.stop(att.SandboxID)
			return err
		}
		m.dhcp.add(att.SandboxID, srv)
	}
	return nil
}

// leaseFor builds the DHCP lease of an interface from its first IPv4
// address; ok is false when it has none.
func leaseFor(ifc Interface, guest Guest, resultDNS []string) (dhcp.Lease, bool, error) {
	var addr *Address
	for i := range ifc.Addresses {
		if ifc.Addresses[i].Prefix.Addr().Is4() {
			addr = &ifc.Addresses[i]
			break
		}
	}
	if addr == nil {
		return dhcp.Lease{}, false, nil
	}
	mac, err := net.ParseMAC(ifc.MAC)
	if err != nil {
		return dhcp.Lease{}, false, errors.New("interface " + ifc.Name + " has no valid MAC: " + ifc.MAC)
	}
	p := addr.Prefix
	l := dhcp.Lease{
		MAC:       mac,
		IP:        net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		MTU:       ifc.MTU,
		Hostname:  guest.Hostname,
		LeaseTime: LeaseTime,
		Search:    guest.DNSSearches,
	}
	if addr.Gateway.IsValid() {
		l.Gateway = addr.Gateway.AsSlice()
		l.ServerID = addr.Gateway.AsSlice()
	} else {
		// No gateway: name ourselves after the network address's last
		// host, which is never the guest's (DHCP needs some server ID).
		l.ServerID = lastHost(p)
	}
	for _, r := range ifc.Routes {
		if !r.Dst.Addr().Is4() {
			continue
		}
		gw := net.IP(nil)
		if r.GW.IsValid() {
			gw = r.GW.AsSlice()
		} else if addr.Gateway.IsValid() {
			gw = addr.Gateway.AsSlice()
		}
		l.Routes = append(l.Routes, dhcp.Route{
			Dst:     net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
			Gateway: gw,
		})
	}
	servers := guest.DNSServers
	if len(servers) == 0 {
		servers = resultDNS
	}
	for _, s := range servers {
		if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
			l.DNS = append(l.DNS, ip.To4())
		}
	}
	return l, true, nil
}
