package dhcp

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	vmMAC      = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	foreignMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x65, 0x43, 0x21}
	leaseIP    = net.IPv4(10, 250, 1, 10).To4()
	otherIP    = net.IPv4(10, 250, 1, 99).To4()
	gatewayIP  = net.IPv4(10, 250, 1, 1).To4()
)

// testLease is a lease with every option set, already validated.
func testLease(t *testing.T) Lease {
	t.Helper()
	l, err := Lease{
		MAC:     vmMAC,
		IP:      net.IPNet{IP: leaseIP, Mask: net.CIDRMask(24, 32)},
		Gateway: gatewayIP,
		Routes: []Route{
			{Dst: net.IPNet{IP: net.IPv4(10, 250, 0, 0), Mask: net.CIDRMask(16, 32)}, Gateway: gatewayIP},
			{Dst: net.IPNet{IP: net.IPv4(169, 254, 169, 254), Mask: net.CIDRMask(32, 32)}},
		},
		MTU:       1450,
		DNS:       []net.IP{net.IPv4(10, 250, 0, 10)},
		Search:    []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Hostname:  "web-0",
		LeaseTime: 2 * time.Hour,
		ServerID:  gatewayIP,
	}.validate()
	if err != nil {
		t.Fatalf("validate test lease: %v", err)
	}
	return l
}

// msg builds a client message; it fails the test on error.
func msg(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(vmMAC)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRespond(t *testing.T) {
	l := testLease(t)
	typ := dhcpv4.WithMessageType
	opt := dhcpv4.WithOption
	ours := opt(dhcpv4.OptServerIdentifier(gatewayIP))
	bcast := dhcpv4.WithBroadcast(true)

	tests := []struct {
		name     string
		req      *dhcpv4.DHCPv4
		want     dhcpv4.MessageType // MessageTypeNone: no reply
		wantYI   net.IP             // yiaddr of the reply
		wantCI   net.IP             // ciaddr of the reply
		wantDst  net.IP
		wantWhy  string // substring of why
		fullOpts bool   // reply carries the whole lease incl. lease times
	}{
		{name: "discover -> offer unicast", req: msg(t, typ(dhcpv4.MessageTypeDiscover)),
			want: dhcpv4.MessageTypeOffer, wantYI: leaseIP, wantDst: leaseIP, wantWhy: "offer", fullOpts: true},
		{name: "discover with broadcast flag -> offer broadcast", req: msg(t, typ(dhcpv4.MessageTypeDiscover), bcast),
			want: dhcpv4.MessageTypeOffer, wantYI: leaseIP, wantDst: net.IPv4bcast, fullOpts: true},
		{name: "discover from foreign MAC ignored", req: msg(t, typ(dhcpv4.MessageTypeDiscover), dhcpv4.WithHwAddr(foreignMAC)),
			wantWhy: "foreign client " + foreignMAC.String()},
		{name: "selecting for our IP -> ack",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), ours, opt(dhcpv4.OptRequestedIPAddress(leaseIP))),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantDst: leaseIP, wantWhy: "selecting ack", fullOpts: true},
		{name: "selecting with broadcast flag -> ack broadcast",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), ours, opt(dhcpv4.OptRequestedIPAddress(leaseIP)), bcast),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantDst: net.IPv4bcast, fullOpts: true},
		{name: "selecting for another IP -> nak",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), ours, opt(dhcpv4.OptRequestedIPAddress(otherIP))),
			want: dhcpv4.MessageTypeNak, wantDst: net.IPv4bcast, wantWhy: "selecting request for " + otherIP.String()},
		{name: "selecting another server ignored",
			req:     msg(t, typ(dhcpv4.MessageTypeRequest), opt(dhcpv4.OptServerIdentifier(otherIP)), opt(dhcpv4.OptRequestedIPAddress(leaseIP))),
			wantWhy: "request for server " + otherIP.String()},
		{name: "selecting without option 50 uses ciaddr",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), ours, dhcpv4.WithClientIP(leaseIP)),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantCI: leaseIP, wantDst: leaseIP, fullOpts: true},
		{name: "init-reboot for our IP -> ack",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), opt(dhcpv4.OptRequestedIPAddress(leaseIP))),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantDst: leaseIP, wantWhy: "init-reboot ack", fullOpts: true},
		{name: "init-reboot for another IP -> nak",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), opt(dhcpv4.OptRequestedIPAddress(otherIP))),
			want: dhcpv4.MessageTypeNak, wantDst: net.IPv4bcast, wantWhy: "init-reboot request for"},
		{name: "renewing -> ack unicast to ciaddr",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(leaseIP)),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantCI: leaseIP, wantDst: leaseIP, wantWhy: "renewing ack", fullOpts: true},
		{name: "rebinding (broadcast flag) -> ack still to ciaddr",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(leaseIP), bcast),
			want: dhcpv4.MessageTypeAck, wantYI: leaseIP, wantCI: leaseIP, wantDst: leaseIP, fullOpts: true},
		{name: "renewing another IP -> nak",
			req:  msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(otherIP)),
			want: dhcpv4.MessageTypeNak, wantDst: net.IPv4bcast, wantWhy: "renewing request for " + otherIP.String()},
		{name: "request naming no address ignored", req: msg(t, typ(dhcpv4.MessageTypeRequest)),
			wantWhy: "names no address"},
		{name: "request for another IP from foreign MAC is not NAKed",
			req:     msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(foreignMAC), opt(dhcpv4.OptRequestedIPAddress(otherIP))),
			wantWhy: "foreign client"},
		{name: "renew from foreign MAC ignored",
			req:     msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(foreignMAC), dhcpv4.WithClientIP(otherIP)),
			wantWhy: "foreign client"},
		{name: "inform -> ack without lease",
			req:  msg(t, typ(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(leaseIP)),
			want: dhcpv4.MessageTypeAck, wantYI: net.IPv4zero, wantCI: leaseIP, wantDst: leaseIP, wantWhy: "inform ack"},
		{name: "release logged only", req: msg(t, typ(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(leaseIP), ours),
			wantWhy: "RELEASE"},
		{name: "decline logged only", req: msg(t, typ(dhcpv4.MessageTypeDecline), ours, opt(dhcpv4.OptRequestedIPAddress(leaseIP))),
			wantWhy: "DECLINE"},
		{name: "server message type from client ignored", req: msg(t, typ(dhcpv4.MessageTypeAck)),
			wantWhy: "unexpected message type"},
		{name: "BOOTREPLY ignored", req: msg(t, typ(dhcpv4.MessageTypeDiscover), func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }),
			wantWhy: "not a BOOTREQUEST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through the wire format, as the server sees it.
			req, err := dhcpv4.FromBytes(tt.req.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			reply, why := respond(req, &l)
			if !strings.Contains(why, tt.wantWhy) {
				t.Errorf("why = %q, want it to contain %q", why, tt.wantWhy)
			}
			if tt.want == dhcpv4.MessageTypeNone {
				if reply != nil {
					t.Fatalf("got reply %s, want none", reply.Summary())
				}
				return
			}
			if reply == nil {
				t.Fatalf("got no reply (%s), want %s", why, tt.want)
			}
			dst := replyDestination(req, reply)
			reply, err = dhcpv4.FromBytes(reply.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
			checkHeader(t, reply, req, tt.want, tt.wantYI, tt.wantCI)
			if !dst.Equal(tt.wantDst) {
				t.Errorf("destination = %s, want %s", dst, tt.wantDst)
			}
			switch {
			case tt.want == dhcpv4.MessageTypeNak:
				checkNak(t, reply)
			case tt.fullOpts:
				checkLeaseOptions(t, reply, &l, true)
			default:
				checkLeaseOptions(t, reply, &l, false)
			}
		})
	}
}

// checkHeader checks the BOOTP fields every reply shares.
func checkHeader(t *testing.T, reply, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, yi, ci net.IP) {
	t.Helper()
	if reply.OpCode != dhcpv4.OpcodeBootReply || reply.MessageType() != mt {
		t.Errorf("reply is %s %s, want BootReply %s", reply.OpCode, reply.MessageType(), mt)
	}
	if reply.TransactionID != req.TransactionID {
		t.Errorf("xid = %s, want %s", reply.TransactionID, req.TransactionID)
	}
	if !bytes.Equal(reply.ClientHWAddr, vmMAC) {
		t.Errorf("chaddr = %s, want %s", reply.ClientHWAddr, vmMAC)
	}
	if reply.IsBroadcast() != req.IsBroadcast() {
		t.Errorf("broadcast flag = %v, want the request's %v", reply.IsBroadcast(), req.IsBroadcast())
	}
	if yi == nil {
		yi = net.IPv4zero
	}
	if ci == nil {
		ci = net.IPv4zero
	}
	if !reply.YourIPAddr.Equal(yi) || !reply.ClientIPAddr.Equal(ci) {
		t.Errorf("yiaddr, ciaddr = %s, %s; want %s, %s", reply.YourIPAddr, reply.ClientIPAddr, yi, ci)
	}
	if sid := reply.ServerIdentifier(); !sid.Equal(gatewayIP) {
		t.Errorf("server ID = %s, want %s", sid, gatewayIP)
	}
}

// checkNak checks that a NAK carries nothing of the lease.
func checkNak(t *testing.T, reply *dhcpv4.DHCPv4) {
	t.Helper()
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionDomainNameServer} {
		if reply.Options.Has(code) {
			t.Errorf("NAK carries %s", code)
		}
	}
	if reply.Message() == "" {
		t.Error("NAK carries no message (option 56)")
	}
}

// checkLeaseOptions checks every option of l in reply; lease times only
// when withTimes, and their absence otherwise (INFORM).
func checkLeaseOptions(t *testing.T, reply *dhcpv4.DHCPv4, l *Lease, withTimes bool) {
	t.Helper()
	if withTimes {
		for _, c := range []struct {
			code dhcpv4.OptionCode
			got  time.Duration
			want time.Duration
		}{
			{dhcpv4.OptionIPAddressLeaseTime, reply.IPAddressLeaseTime(0), 2 * time.Hour},
			{dhcpv4.OptionRenewTimeValue, reply.IPAddressRenewalTime(0), time.Hour},
			{dhcpv4.OptionRebindingTimeValue, reply.IPAddressRebindingTime(0), 105 * time.Minute},
		} {
			if c.got != c.want {
				t.Errorf("%s = %s, want %s", c.code, c.got, c.want)
			}
		}
	} else {
		for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue} {
			if reply.Options.Has(code) {
				t.Errorf("reply carries %s, want none", code)
			}
		}
	}
	if got := reply.SubnetMask(); got.String() != l.IP.Mask.String() {
		t.Errorf("mask = %s, want %s", got, l.IP.Mask)
	}
	if got := reply.Router(); len(got) != 1 || !got[0].Equal(gatewayIP) {
		t.Errorf("routers = %v, want [%s]", got, gatewayIP)
	}
	if got := reply.ClasslessStaticRoute(); len(got) != 3 {
		t.Errorf("option 121 = %v, want 3 routes", got)
	}
	if got := reply.GetOneOption(dhcpv4.OptionInterfaceMTU); !bytes.Equal(got, []byte{0x05, 0xaa}) {
		t.Errorf("MTU option = %x, want 05aa (1450)", got)
	}
	if got := reply.DNS(); len(got) != 1 || !got[0].Equal(net.IPv4(10, 250, 0, 10)) {
		t.Errorf("DNS = %v, want [10.250.0.10]", got)
	}
	if got := reply.DomainName(); got != "default.svc.cluster.local" {
		t.Errorf("domain name = %q", got)
	}
	if got := reply.DomainSearch(); got == nil || strings.Join(got.Labels, ",") != strings.Join(l.Search, ",") {
		t.Errorf("domain search = %v, want %v", got, l.Search)
	}
	if got := reply.HostName(); got != "web-0" {
		t.Errorf("hostname = %q, want web-0", got)
	}
}

func TestRespondCopiesClientIdentifier(t *testing.T) {
	l := testLease(t)
	id := []byte{0xff, 0, 0, 0, 1, 0, 1, 2, 3}
	req := msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithOption(dhcpv4.OptClientIdentifier(id)))
	reply, _ := respond(req, &l)
	if got := reply.GetOneOption(dhcpv4.OptionClientIdentifier); !bytes.Equal(got, id) {
		t.Errorf("client identifier = %x, want %x (RFC 6842)", got, id)
	}
}

func TestClasslessRoutesEncoding(t *testing.T) {
	gw := gatewayIP
	tests := []struct {
		name    string
		gateway net.IP
		routes  []Route
		want    []byte // option 121 payload; nil means the option is absent
	}{
		{
			name:    "routes plus implied default via gateway",
			gateway: gw,
			routes: []Route{
				{Dst: net.IPNet{IP: net.IPv4(10, 250, 7, 7), Mask: net.CIDRMask(16, 32)}, Gateway: gw}, // host bits dropped
				{Dst: net.IPNet{IP: net.IPv4(169, 254, 169, 254), Mask: net.CIDRMask(32, 32)}},         // on-link
				{Dst: net.IPNet{IP: net.IPv4(192, 168, 128, 0), Mask: net.CIDRMask(17, 32)}, Gateway: gw},
			},
			want: []byte{
				16, 10, 250, 10, 250, 1, 1,
				32, 169, 254, 169, 254, 0, 0, 0, 0,
				17, 192, 168, 128, 10, 250, 1, 1,
				0, 10, 250, 1, 1,
			},
		},
		{
			name:    "explicit default route is not doubled",
			gateway: gw,
			routes: []Route{
				{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gateway: net.IPv4(10, 250, 1, 254)},
			},
			want: []byte{0, 10, 250, 1, 254},
		},
		{
			name:    "no gateway, no default route",
			routes:  []Route{{Dst: net.IPNet{IP: net.IPv4(10, 0, 0, 0), Mask: net.CIDRMask(8, 32)}, Gateway: gw}},
			want:    []byte{8, 10, 10, 250, 1, 1},
			gateway: nil,
		},
		{name: "no routes: no option 121, option 3 only", gateway: gw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Lease{MAC: vmMAC, IP: net.IPNet{IP: leaseIP, Mask: net.CIDRMask(24, 32)},
				Gateway: tt.gateway, Routes: tt.routes, ServerID: gw}.validate()
			if err != nil {
				t.Fatal(err)
			}
			reply, _ := respond(msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)), &l)
			reply, err = dhcpv4.FromBytes(reply.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			got := reply.GetOneOption(dhcpv4.OptionClasslessStaticRoute)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("option 121 = %v, want %v", got, tt.want)
			}
			if hasRouter := reply.Options.Has(dhcpv4.OptionRouter); hasRouter != (tt.gateway != nil) {
				t.Errorf("option 3 present = %v, want %v", hasRouter, tt.gateway != nil)
			}
		})
	}
}
