package dhcp

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DefaultLeaseTime is the lease time handed out when Lease.LeaseTime is 0.
// The VM's address never changes while the pod lives, so the value only
// decides how often the guest renews.
const DefaultLeaseTime = time.Hour

// ErrInvalidConfig is the class of every error Start returns for a bad
// Config or Lease; test it with errors.Is.
var ErrInvalidConfig = errors.New("invalid DHCP server config")

// Lease is what the VM gets. It is the whole state of a server: one client
// (MAC) gets one fixed address with these options, nobody else gets anything.
type Lease struct {
	// MAC is the VM NIC's address, the only client answered. Required.
	MAC net.HardwareAddr
	// IP is the address handed out and its mask (option 1). Required, IPv4.
	IP net.IPNet
	// Gateway is the default router (option 3); omitted when nil. When Routes
	// is non-empty the default route via Gateway is also put in option 121,
	// because RFC 3442 clients ignore option 3 when option 121 is present.
	Gateway net.IP
	// Routes become option 121 (classless static routes, RFC 3442) when
	// non-empty.
	Routes []Route
	// MTU is the interface MTU (option 26), sent when > 0; valid 68..65535.
	MTU int
	// DNS servers (option 6), IPv4 only.
	DNS []net.IP
	// Search is the DNS search list (option 119); its first entry is also
	// the domain name (option 15).
	Search []string
	// Hostname is the guest's host name (option 12), omitted when empty.
	Hostname string
	// LeaseTime is the lease duration (option 51); T1 (option 58) and T2
	// (option 59) are 50% and 87.5% of it. 0 means DefaultLeaseTime; whole
	// seconds, at least 1s.
	LeaseTime time.Duration
	// ServerID is the server identifier (option 54) and the IPv4 source
	// address of replies; callers pass the gateway. Required.
	ServerID net.IP
}

// Route is one classless static route of option 121.
type Route struct {
	// Dst is the destination network, IPv4.
	Dst net.IPNet
	// Gateway is the next hop; nil or 0.0.0.0 means the destination is
	// on-link.
	Gateway net.IP
}

// validate checks everything a reply is built from, so that building one
// cannot fail later. It returns a copy normalised for building replies:
// 4-byte addresses and masks, route destinations masked, LeaseTime defaulted.
func (l Lease) validate() (Lease, error) {
	bad := func(format string, args ...any) (Lease, error) {
		return Lease{}, fmt.Errorf("%w: lease: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(l.MAC) != 6 {
		return bad("MAC %q is not a 6-byte Ethernet address", l.MAC)
	}
	if l.MAC[0]&1 != 0 {
		return bad("MAC %s is a multicast address", l.MAC)
	}
	l.MAC = append(net.HardwareAddr(nil), l.MAC...)
	ip, mask := l.IP.IP.To4(), mask4(l.IP.Mask)
	if ip == nil {
		return bad("IP %q is not an IPv4 address", l.IP.IP)
	}
	if mask == nil {
		return bad("mask %q of %s is not a canonical IPv4 mask", l.IP.Mask.String(), ip)
	}
	if ip.IsUnspecified() || ip.Equal(net.IPv4bcast) || ip.IsMulticast() || ip.IsLoopback() {
		return bad("IP %s cannot be leased", ip)
	}
	l.IP = net.IPNet{IP: ip, Mask: mask}
	sid := l.ServerID.To4()
	if sid == nil || sid.IsUnspecified() || sid.Equal(ip) {
		return bad("server ID %q is not an IPv4 address other than the leased one", l.ServerID)
	}
	l.ServerID = sid
	if l.Gateway != nil {
		if l.Gateway = l.Gateway.To4(); l.Gateway == nil {
			return bad("gateway is not an IPv4 address")
		}
	}
	routes := make([]Route, len(l.Routes))
	for i, r := range l.Routes {
		dst, m := r.Dst.IP.To4(), mask4(r.Dst.Mask)
		if dst == nil || m == nil {
			return bad("route %d: destination %q is not an IPv4 network", i, r.Dst.String())
		}
		gw := r.Gateway.To4()
		if r.Gateway != nil && gw == nil {
			return bad("route %d: gateway %q is not an IPv4 address", i, r.Gateway)
		}
		routes[i] = Route{Dst: net.IPNet{IP: dst.Mask(m), Mask: m}, Gateway: gw}
	}
	l.Routes = routes
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return bad("MTU %d is outside 68..65535", l.MTU)
	}
	dns := make([]net.IP, len(l.DNS))
	for i, d := range l.DNS {
		if dns[i] = d.To4(); dns[i] == nil {
			return bad("DNS server %d (%q) is not an IPv4 address", i, d)
		}
	}
	l.DNS = dns
	for i, s := range l.Search {
		if s == "" || len(s) > 253 {
			return bad("search domain %d (%q) is empty or longer than 253 bytes", i, s)
		}
	}
	if len(l.Hostname) > 255 {
		return bad("hostname is longer than 255 bytes")
	}
	switch {
	case l.LeaseTime == 0:
		l.LeaseTime = DefaultLeaseTime
	case l.LeaseTime < time.Second || l.LeaseTime > dhcpv4.MaxLeaseTime:
		return bad("lease time %s is outside 1s..%s", l.LeaseTime, dhcpv4.MaxLeaseTime)
	}
	return l, nil
}

// mask4 returns m as a 4-byte IPv4 mask, or nil when it is not a canonical
// IPv4 mask (a 16-byte mask is accepted when its first 96 bits are set).
func mask4(m net.IPMask) net.IPMask {
	switch ones, bits := m.Size(); {
	case bits == 32:
		return net.CIDRMask(ones, 32)
	case bits == 128 && ones >= 96:
		return net.CIDRMask(ones-96, 32)
	}
	return nil
}

// classlessRoutes returns option 121's routes: the configured ones plus a
// default route via Gateway unless one is configured already.
func (l *Lease) classlessRoutes() []*dhcpv4.Route {
	out := make([]*dhcpv4.Route, 0, len(l.Routes)+1)
	hasDefault := false
	for _, r := range l.Routes {
		ones, _ := r.Dst.Mask.Size()
		hasDefault = hasDefault || ones == 0
		gw := r.Gateway
		if gw == nil {
			gw = net.IPv4zero.To4()
		}
		out = append(out, &dhcpv4.Route{Dest: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}, Router: gw})
	}
	if !hasDefault && l.Gateway != nil {
		out = append(out, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Router: l.Gateway.To4(),
		})
	}
	return out
}
