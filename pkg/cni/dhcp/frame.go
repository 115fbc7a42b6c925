package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Sizes and numbers of the Ethernet/IPv4/UDP framing around DHCP.
const (
	ethHeaderLen  = 14
	ipv4HeaderLen = 20 // without options, as we send it
	udpHeaderLen  = 8
	etherTypeIPv4 = 0x0800
	protoUDP      = 17
	serverPort    = 67
	clientPort    = 68
)

// udpFrame is one Ethernet/IPv4/UDP frame, decoded.
type udpFrame struct {
	srcMAC, dstMAC   net.HardwareAddr
	srcIP, dstIP     net.IP
	srcPort, dstPort uint16
	payload          []byte
}

// buildFrame returns the Ethernet frame carrying f: an IPv4 header without
// options (TTL 64, DF, ID 0, header checksum set) and a UDP header with its
// checksum. nclient4 has such an encoder (udp4pkt) but keeps it unexported,
// and mdlayher/packet's datagram sockets cannot set the source MAC, so the
// ~40 bytes of headers are written here.
func buildFrame(f udpFrame) []byte {
	ipLen := ipv4HeaderLen + udpHeaderLen + len(f.payload)
	b := make([]byte, ethHeaderLen+ipLen)

	copy(b[0:6], f.dstMAC)
	copy(b[6:12], f.srcMAC)
	binary.BigEndian.PutUint16(b[12:14], etherTypeIPv4)

	ip := b[ethHeaderLen : ethHeaderLen+ipv4HeaderLen]
	ip[0] = 4<<4 | ipv4HeaderLen/4
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF, offset 0
	ip[8] = 64
	ip[9] = protoUDP
	copy(ip[12:16], f.srcIP.To4())
	copy(ip[16:20], f.dstIP.To4())
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(0, ip)))

	udp := b[ethHeaderLen+ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], f.srcPort)
	binary.BigEndian.PutUint16(udp[2:4], f.dstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[udpHeaderLen:], f.payload)
	binary.BigEndian.PutUint16(udp[6:8], udpChecksum(ip[12:16], ip[16:20], udp))
	return b
}

// errNotIPv4UDP marks frames that parseFrame cannot decode; the server drops
// them without logging more than a debug line.
var errNotIPv4UDP = errors.New("not an IPv4/UDP frame")

// parseFrame decodes an Ethernet/IPv4/UDP frame. It checks lengths, not
// checksums: frames from a virtio NIC may carry a partial UDP checksum that
// the host never completes (checksum offload), so a bad one proves nothing.
// Fragments are rejected; no DHCP client fragments.
func parseFrame(b []byte) (udpFrame, error) {
	if len(b) < ethHeaderLen+ipv4HeaderLen+udpHeaderLen {
		return udpFrame{}, fmt.Errorf("%w: %d bytes", errNotIPv4UDP, len(b))
	}
	if et := binary.BigEndian.Uint16(b[12:14]); et != etherTypeIPv4 {
		return udpFrame{}, fmt.Errorf("%w: ethertype %#04x", errNotIPv4UDP, et)
	}
	ip := b[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	switch {
	case ip[0]>>4 != 4:
		return udpFrame{}, fmt.Errorf("%w: IP version %d", errNotIPv4UDP, ip[0]>>4)
	case ip[9] != protoUDP:
		return udpFrame{}, fmt.Errorf("%w: IP protocol %d", errNotIPv4UDP, ip[9])
	case ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(ip):
		return udpFrame{}, fmt.Errorf("%w: bad IPv4 lengths (header %d, total %d, have %d)", errNotIPv4UDP, ihl, total, len(ip))
	case binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0:
		return udpFrame{}, fmt.Errorf("%w: IPv4 fragment", errNotIPv4UDP)
	}
	udp := ip[ihl:total] // drops Ethernet padding after the IP packet
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < udpHeaderLen || ulen > len(udp) {
		return udpFrame{}, fmt.Errorf("%w: UDP length %d of %d bytes", errNotIPv4UDP, ulen, len(udp))
	}
	return udpFrame{
		dstMAC:  net.HardwareAddr(b[0:6]),
		srcMAC:  net.HardwareAddr(b[6:12]),
		srcIP:   net.IP(ip[12:16]),
		dstIP:   net.IP(ip[16:20]),
		srcPort: binary.BigEndian.Uint16(udp[0:2]),
		dstPort: binary.BigEndian.Uint16(udp[2:4]),
		payload: udp[udpHeaderLen:ulen],
	}, nil
}

// udpChecksum is the RFC 768 checksum of udp (its checksum field zero)
// over the IPv4 pseudo-header. 0 is sent as 0xffff, since 0 means "none".
func udpChecksum(src, dst net.IP, udp []byte) uint16 {
	s := sum(0, src.To4())
	s = sum(s, dst.To4())
	s += protoUDP + uint32(len(udp))
	c := ^fold(sum(s, udp))
	if c == 0 {
		return 0xffff
	}
	return c
}

// sum adds b to the running RFC 1071 one's complement sum s.
func sum(s uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// fold folds a 32-bit running sum into 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// notOutgoingFilter drops frames the kernel hands a packet socket as
// PACKET_OUTGOING: on a tap those are our own replies and whatever the
// bridge forwards to the VM, including other pods' DHCP traffic. The
// pkttype extension only exists in the kernel (bpf.VM does not run it), so
// this part is kept apart from dhcpServerFilter, which tests run in bpf.VM.
var notOutgoingFilter = []bpf.Instruction{
	bpf.LoadExtension{Num: bpf.ExtType},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
}

// dhcpServerFilter accepts Ethernet frames carrying unfragmented IPv4/UDP to
// port 67 and drops everything else, so the VM's ordinary traffic never
// wakes the server. parseFrame checks the same again in userspace.
var dhcpServerFilter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // ethertype
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv4, SkipTrue: 8},
	bpf.LoadAbsolute{Off: ethHeaderLen + 9, Size: 1}, // IP protocol
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoUDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 2}, // flags, fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: ethHeaderLen},              // X = IP header length
	bpf.LoadIndirect{Off: ethHeaderLen + 2, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: serverPort, SkipTrue: 1},
	bpf.RetConstant{Val: 0x40000}, // accept, whole frame
	bpf.RetConstant{Val: 0},
}

// socketFilter assembles the program attached to the server's socket.
func socketFilter() ([]unix.SockFilter, error) {
	prog := append(append([]bpf.Instruction{}, notOutgoingFilter...), dhcpServerFilter...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble socket filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
