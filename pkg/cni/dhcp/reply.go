package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// respond maps one client message to the reply the server sends, or to nil
// when it sends none. why is a short reason for the debug log. It is pure: no
// clock, no randomness, no I/O; l must have passed validate.
//
//	DISCOVER                                   -> OFFER
//	REQUEST selecting (option 54 is ours)      -> ACK if option 50 is the lease, else NAK
//	REQUEST selecting (option 54 is another's) -> nothing (the client chose another server)
//	REQUEST init-reboot (option 50, no 54)     -> ACK if option 50 is the lease, else NAK
//	REQUEST renewing/rebinding (ciaddr only)   -> ACK if ciaddr is the lease, else NAK
//	INFORM                                     -> ACK without yiaddr and lease times
//	RELEASE, DECLINE, anything else            -> nothing
//	any message whose chaddr is not Lease.MAC  -> nothing, not even a NAK
func respond(req *dhcpv4.DHCPv4, l *Lease) (reply *dhcpv4.DHCPv4, why string) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, "not a BOOTREQUEST"
	}
	if req.HWType != iana.HWTypeEthernet || !bytes.Equal(req.ClientHWAddr, l.MAC) {
		// Every pod of a bridge CNI shares the L2 segment; another
		// server owns this client. Never NAK it.
		return nil, "foreign client " + req.ClientHWAddr.String()
	}
	switch mt := req.MessageType(); mt {
	case dhcpv4.MessageTypeDiscover:
		return leaseReply(req, l, dhcpv4.MessageTypeOffer), "offer"
	case dhcpv4.MessageTypeRequest:
		return respondRequest(req, l)
	case dhcpv4.MessageTypeInform:
		return leaseReply(req, l, dhcpv4.MessageTypeAck), "inform ack"
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		return nil, mt.String()
	default:
		return nil, "unexpected message type " + mt.String()
	}
}

// respondRequest handles a DHCPREQUEST from our client in each of the
// client states of RFC 2131 section 4.3.2.
func respondRequest(req *dhcpv4.DHCPv4, l *Lease) (*dhcpv4.DHCPv4, string) {
	sid, wanted := req.ServerIdentifier(), req.RequestedIPAddress()
	state := "selecting"
	switch {
	case sid != nil && !sid.Equal(l.ServerID):
		return nil, "request for server " + sid.String()
	case sid == nil && wanted != nil:
		state = "init-reboot"
	case sid == nil && isSet(req.ClientIPAddr):
		state, wanted = "renewing", req.ClientIPAddr
	case wanted == nil && isSet(req.ClientIPAddr):
		// Selecting without option 50 breaks RFC 2131, but the
		// address the client means is unambiguous.
		wanted = req.ClientIPAddr
	case wanted == nil:
		return nil, "request names no address"
	}
	if !wanted.Equal(l.IP.IP) {
		return nakReply(req, l), state + " request for " + wanted.String()
	}
	return leaseReply(req, l, dhcpv4.MessageTypeAck), state + " ack"
}

// leaseReply builds an OFFER or ACK carrying the whole lease. An ACK to an
// INFORM carries the configuration only: no yiaddr, no lease times.
func leaseReply(req *dhcpv4.DHCPv4, l *Lease, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	inform := req.MessageType() == dhcpv4.MessageTypeInform
	mods := baseReply(req, l, mt)
	if mt == dhcpv4.MessageTypeAck {
		// RFC 2131 table 3: an ACK echoes ciaddr, an OFFER leaves it 0.
		mods = append(mods, dhcpv4.WithClientIP(req.ClientIPAddr))
	}
	if !inform {
		mods = append(mods,
			dhcpv4.WithYourIP(l.IP.IP),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(l.LeaseTime)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(l.LeaseTime/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(l.LeaseTime*7/8)),
		)
	}
	mods = append(mods, dhcpv4.WithNetmask(l.IP.Mask))
	if l.Gateway != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(l.Gateway)))
	}
	if len(l.Routes) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(l.classlessRoutes()...)))
	}
	if l.MTU > 0 {
		mtu := binary.BigEndian.AppendUint16(nil, uint16(l.MTU))
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, mtu))
	}
	if len(l.DNS) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(l.DNS...)))
	}
	if len(l.Search) > 0 {
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptDomainName(l.Search[0])),
			dhcpv4.WithDomainSearchList(l.Search...),
		)
	}
	if l.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
	}
	return build(mods)
}

// nakReply builds the NAK that tells our own client its address is wrong.
func nakReply(req *dhcpv4.DHCPv4, l *Lease) *dhcpv4.DHCPv4 {
	return build(append(baseReply(req, l, dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptMessage("requested address is not this client's lease"))))
}

// baseReply is what every reply carries: BOOTP header fields from the
// request (xid, chaddr, flags, giaddr), the message type, the server
// identifier and, per RFC 6842, the client identifier.
func baseReply(req *dhcpv4.DHCPv4, l *Lease, mt dhcpv4.MessageType) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithReply(req),
		dhcpv4.WithGatewayIP(req.GatewayIPAddr),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.ServerID)),
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientIdentifier),
	}
}

// build applies mods to an empty message. dhcpv4.New would draw a random
// transaction ID first (overwritten by WithReply anyway); building by hand
// keeps respond free of randomness and of an error path.
func build(mods []dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		HWType:        iana.HWTypeEthernet,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       dhcpv4.Options{},
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

// replyDestination is the IPv4 destination of reply to req (RFC 2131
// section 4.1, without relays: a relay cannot sit between a tap and its VM).
// The Ethernet destination is always the client's chaddr, so even a
// broadcast IP reaches only our VM.
func replyDestination(req, reply *dhcpv4.DHCPv4) net.IP {
	switch {
	case reply.MessageType() == dhcpv4.MessageTypeNak:
		return net.IPv4bcast
	case isSet(req.ClientIPAddr):
		return req.ClientIPAddr
	case req.IsBroadcast() || !isSet(reply.YourIPAddr):
		return net.IPv4bcast
	default:
		return reply.YourIPAddr
	}
}

// isSet reports whether ip is a non-zero address.
func isSet(ip net.IP) bool {
	return ip != nil && !ip.IsUnspecified()
}
