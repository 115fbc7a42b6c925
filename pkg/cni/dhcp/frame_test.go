package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

var serverMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}

// offerFrame is the frame the server sends for an OFFER, as built by the
// server's own path.
func offerFrame(t *testing.T, dst net.IP) ([]byte, []byte) {
	t.Helper()
	l := testLease(t)
	reply, _ := respond(msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)), &l)
	payload := reply.ToBytes()
	return buildFrame(udpFrame{
		srcMAC: serverMAC, dstMAC: vmMAC, srcIP: gatewayIP, dstIP: dst,
		srcPort: serverPort, dstPort: clientPort, payload: payload,
	}), payload
}

func TestBuildFrameParsesBack(t *testing.T) {
	for _, dst := range []net.IP{leaseIP, net.IPv4bcast} {
		t.Run(dst.String(), func(t *testing.T) {
			b, payload := offerFrame(t, dst)
			f, err := parseFrame(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.srcMAC, serverMAC) || !bytes.Equal(f.dstMAC, vmMAC) {
				t.Errorf("MACs %s -> %s, want %s -> %s", f.srcMAC, f.dstMAC, serverMAC, vmMAC)
			}
			if !f.srcIP.Equal(gatewayIP) || !f.dstIP.Equal(dst) {
				t.Errorf("IPs %s -> %s, want %s -> %s", f.srcIP, f.dstIP, gatewayIP, dst)
			}
			if f.srcPort != 67 || f.dstPort != 68 {
				t.Errorf("ports %d -> %d, want 67 -> 68", f.srcPort, f.dstPort)
			}
			if !bytes.Equal(f.payload, payload) {
				t.Error("payload differs")
			}
			if _, err := dhcpv4.FromBytes(f.payload); err != nil {
				t.Errorf("payload is not DHCP: %v", err)
			}

			ip := b[ethHeaderLen : ethHeaderLen+ipv4HeaderLen]
			if ip[0] != 0x45 || ip[8] != 64 || ip[9] != 17 {
				t.Errorf("IPv4 version/IHL %#x, TTL %d, protocol %d", ip[0], ip[8], ip[9])
			}
			if got := int(binary.BigEndian.Uint16(ip[2:4])); got != len(b)-ethHeaderLen {
				t.Errorf("IPv4 total length %d, want %d", got, len(b)-ethHeaderLen)
			}
			// A correct header sums to 0xffff including its checksum.
			if s := onesSum(ip); s != 0xffff {
				t.Errorf("IPv4 header checksum wrong: sum %#04x", s)
			}
			udp := b[ethHeaderLen+ipv4HeaderLen:]
			if got := int(binary.BigEndian.Uint16(udp[4:6])); got != len(udp) {
				t.Errorf("UDP length %d, want %d", got, len(udp))
			}
			pseudo := append(append(append([]byte{}, gatewayIP...), dst.To4()...), 0, 17, 0, 0)
			binary.BigEndian.PutUint16(pseudo[10:], uint16(len(udp)))
			if s := onesSum(append(pseudo, udp...)); s != 0xffff {
				t.Errorf("UDP checksum wrong: sum %#04x", s)
			}
		})
	}
}

// onesSum is a deliberately naive RFC 1071 sum, independent of sum/fold.
func onesSum(b []byte) uint16 {
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var s uint64
	for i := 0; i < len(b); i += 2 {
		s += uint64(b[i])<<8 + uint64(b[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestChecksumKnownVector(t *testing.T) {
	// The IPv4 header example from Wikipedia's "IPv4 header checksum".
	hdr := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := ^fold(sum(0, hdr)); got != 0xb861 {
		t.Errorf("checksum = %#04x, want 0xb861", got)
	}
}

func TestParseFrameRejects(t *testing.T) {
	good, _ := offerFrame(t, leaseIP)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte{}, good...))
	}
	tests := []struct {
		name  string
		frame []byte
	}{
		{"short", good[:40]},
		{"ARP ethertype", mutate(func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b })},
		{"IPv6 version", mutate(func(b []byte) []byte { b[14] = 0x65; return b })},
		{"TCP", mutate(func(b []byte) []byte { b[23] = 6; return b })},
		{"IHL below 5", mutate(func(b []byte) []byte { b[14] = 0x44; return b })},
		{"total length past frame", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 2000); return b })},
		{"fragment offset", mutate(func(b []byte) []byte { b[20], b[21] = 0x00, 0x10; return b })},
		{"more fragments", mutate(func(b []byte) []byte { b[20] = 0x20; return b })},
		{"UDP length past IP payload", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[38:], 2000); return b })},
		{"UDP length below header", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[38:], 4); return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseFrame(tt.frame); !errors.Is(err, errNotIPv4UDP) {
				t.Errorf("err = %v, want errNotIPv4UDP", err)
			}
		})
	}
}

func TestParseFrameDropsEthernetPadding(t *testing.T) {
	good, payload := offerFrame(t, leaseIP)
	f, err := parseFrame(append(good, make([]byte, 20)...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.payload, payload) {
		t.Errorf("payload has %d bytes, want %d", len(f.payload), len(payload))
	}
}

func TestDHCPServerFilter(t *testing.T) {
	vm, err := bpf.NewVM(dhcpServerFilter)
	if err != nil {
		t.Fatal(err)
	}
	toServer := func(f func(b []byte)) []byte {
		b := buildFrame(udpFrame{srcMAC: vmMAC, dstMAC: serverMAC, srcIP: net.IPv4zero, dstIP: net.IPv4bcast,
			srcPort: clientPort, dstPort: serverPort, payload: make([]byte, 300)})
		if f != nil {
			f(b)
		}
		return b
	}
	// An IPv4 header with 4 bytes of options: port 67 moves 4 bytes on.
	withOptions := func() []byte {
		b := toServer(nil)
		b = append(b[:34], append([]byte{1, 1, 1, 1}, b[34:]...)...)
		b[14] = 0x46
		return b
	}
	tests := []struct {
		name   string
		frame  []byte
		accept bool
	}{
		{"DHCP to server", toServer(nil), true},
		{"DHCP to server, IP options", withOptions(), true},
		{"DHCP to client port", toServer(func(b []byte) { b[37] = clientPort }), false},
		{"TCP to port 67", toServer(func(b []byte) { b[23] = 6 }), false},
		{"ARP", toServer(func(b []byte) { b[12], b[13] = 0x08, 0x06 }), false},
		{"fragment", toServer(func(b []byte) { b[21] = 1 }), false},
		{"runt", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := vm.Run(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tt.accept {
				t.Errorf("accepted = %v (%d bytes), want %v", got, n, tt.accept)
			}
		})
	}
	if prog, err := socketFilter(); err != nil || len(prog) != len(notOutgoingFilter)+len(dhcpServerFilter) {
		t.Errorf("socketFilter() = %d instructions, %v", len(prog), err)
	}
}
