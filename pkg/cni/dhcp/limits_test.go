package dhcp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/time/rate"

	"github.com/vmpod/vmpod/pkg/cni/nsenter"
	"golang.org/x/sys/unix"
)

// clientFrame is a client message from vmMAC as a guest sends it at boot.
func clientFrame(t *testing.T, m *dhcpv4.DHCPv4) []byte {
	t.Helper()
	return buildFrame(udpFrame{srcMAC: vmMAC, dstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		srcIP: net.IPv4zero, dstIP: net.IPv4bcast, srcPort: clientPort, dstPort: serverPort, payload: m.ToBytes()})
}

// withRawOption sets option code to raw bytes, whatever their length.
func withRawOption(code uint8, raw []byte) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) { d.Options[code] = raw }
}

func TestCheckRequest(t *testing.T) {
	typ := dhcpv4.WithMessageType
	tests := []struct {
		name string
		req  *dhcpv4.DHCPv4
		ok   bool
	}{
		{"discover", msg(t, typ(dhcpv4.MessageTypeDiscover)), true},
		{"selecting request", msg(t, typ(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gatewayIP)),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leaseIP)), withRawOption(61, append([]byte{1}, vmMAC...))), true},
		{"no message type", msg(t), false},
		{"2-byte message type", msg(t, withRawOption(53, []byte{1, 1})), false},
		{"3-byte server identifier", msg(t, typ(dhcpv4.MessageTypeRequest), withRawOption(54, []byte{10, 250, 1}),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leaseIP))), false},
		{"5-byte requested address", msg(t, typ(dhcpv4.MessageTypeRequest), withRawOption(50, []byte{10, 250, 1, 10, 0})), false},
		{"1-byte client identifier", msg(t, typ(dhcpv4.MessageTypeDiscover), withRawOption(61, []byte{1})), false},
		{"client identifier over 255 bytes (concatenated)", msg(t, typ(dhcpv4.MessageTypeDiscover), withRawOption(61, make([]byte, 300))), false},
		{"Ethernet chaddr of 16 bytes", msg(t, typ(dhcpv4.MessageTypeDiscover), dhcpv4.WithHwAddr(make(net.HardwareAddr, 16))), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkRequest(tt.req); (err == nil) != tt.ok {
				t.Errorf("checkRequest = %v, want ok %v", err, tt.ok)
			}
		})
	}
	// Through decode, as the server sees it: the malformed server
	// identifier is refused rather than read as absent (INIT-REBOOT, ACK).
	bad := clientFrame(t, tests[4].req)
	if req, err := decode(bad); err == nil {
		l := testLease(t)
		reply, why := respond(req, &l)
		t.Fatalf("decode accepted a 3-byte server identifier; respond would answer %v (%s)", reply.MessageType(), why)
	}
	if _, err := decode(clientFrame(t, tests[0].req)); err != nil {
		t.Fatalf("decode of a DISCOVER: %v", err)
	}
}

func TestGuestLogLinesAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), limits: newGuestLimits()}
	for range 1000 {
		s.guestLog(slog.LevelDebug, "DHCP dropped frame")
	}
	if n := strings.Count(buf.String(), "\n"); n != LogBurst {
		t.Fatalf("1000 guest-triggered lines logged %d, want the burst of %d", n, LogBurst)
	}
	s.limits.lines.SetLimit(rate.Inf)
	s.guestLog(slog.LevelInfo, "DHCP client released its lease")
	if !strings.Contains(buf.String(), "suppressed_lines=990") {
		t.Fatalf("the next line does not count the suppressed ones:\n%s", buf.String())
	}

	// Lines of a level the logger drops spend no budget.
	buf.Reset()
	s = &Server{log: slog.New(slog.NewTextHandler(&buf, nil)), limits: newGuestLimits()}
	for range 1000 {
		s.guestLog(slog.LevelDebug, "DHCP dropped frame")
	}
	s.guestLog(slog.LevelWarn, "DHCP client declined its address")
	if buf.Len() == 0 || strings.Contains(buf.String(), "suppressed") {
		t.Fatalf("a warning after filtered debug lines: %q", buf.String())
	}
}

// FuzzDecodeAndRespond feeds arbitrary frames through everything the
// server does with a guest's bytes before it writes: parse, check, answer,
// encode. It must never panic.
func FuzzDecodeAndRespond(f *testing.F) {
	t := &testing.T{}
	f.Add(clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))))
	f.Add(clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), withRawOption(54, []byte{1, 2, 3}))))
	f.Add(clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), withRawOption(61, make([]byte, 255)))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l := testLease(t)
		req, err := decode(b)
		if err != nil {
			return
		}
		if reply, _ := respond(req, &l); reply != nil {
			buildFrame(udpFrame{srcMAC: serverMAC, dstMAC: l.MAC, srcIP: l.ServerID, dstIP: replyDestination(req, reply),
				srcPort: serverPort, dstPort: clientPort, payload: reply.ToBytes()})
		}
	})
}

// TestServerBoundsAHostileGuest sends, from the VM's side of the tap, a
// request with a malformed server identifier, an oversized DISCOVER and a
// flood of DISCOVERs: the first two get no answer, the flood gets at most
// the burst plus the rate, and the log at debug level stays within its
// budget; a well-behaved client is served after the flood. Root only.
func TestServerBoundsAHostileGuest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a netns, links and packet sockets")
	}
	tn := newTestNet(t)
	tap := tn.veth(t, "tap0", "vm0", vmMAC)
	vm, err := tn.h.LinkByName("vm0")
	if err != nil {
		t.Fatal(err)
	}
	// A jumbo MTU, so the guest can send a frame past MaxFrameLen.
	for _, l := range []netlink.Link{tap, vm} {
		if err := tn.h.LinkSetMTU(l, 4000); err != nil {
			t.Fatal(err)
		}
	}
	var logs syncBuffer
	srv, err := Start(Config{NetNSPath: tn.path, Interface: "tap0", ServerMAC: serverMAC, Lease: testLease(t),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var raw *packet.Conn
	err = nsenter.Run(tn.path, func() error {
		ifc, err := net.InterfaceByName("vm0")
		if err != nil {
			return err
		}
		raw, err = packet.Listen(ifc, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	bcast := &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	send := func(b []byte) {
		t.Helper()
		if _, err := raw.WriteTo(b, bcast); err != nil {
			t.Fatal(err)
		}
	}
	discover := clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)))

	// Malformed: a 3-byte server identifier with our address requested
	// (read as absent, it would be an INIT-REBOOT and get an ACK).
	send(clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), withRawOption(54, []byte{10, 250, 1}),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leaseIP)))))
	waitStats(t, srv, 0, 1)
	// Oversized: a valid DISCOVER in a 2,500-byte frame.
	send(append(append([]byte{}, discover...), make([]byte, 2500-len(discover))...))
	waitStats(t, srv, 0, 2)
	// The server counts a refusal, then logs it.
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		if strings.Contains(logs.String(), "option 54 has 3 bytes") && strings.Contains(logs.String(), "oversized frame") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the refusals were not logged:\n%s", logs.String())
			break
		}
	}

	// The flood.
	linesBefore := strings.Count(logs.String(), "\n")
	t0 := time.Now()
	for range 5000 {
		send(discover)
	}
	time.Sleep(2 * time.Second)
	elapsed := time.Since(t0).Seconds()
	answered, _ := srv.Stats()
	if limit := uint64(MessageBurst + MessagesPerSecond*elapsed + 2); answered > limit || answered < MessageBurst/2 {
		t.Errorf("5000 DISCOVERs in %.1fs got %d answers, want at most %d (burst %d + %d/s)", elapsed, answered, limit, MessageBurst, MessagesPerSecond)
	}
	lines := strings.Count(logs.String(), "\n") - linesBefore
	if lines > LogBurst {
		t.Errorf("the flood logged %d lines, want at most %d", lines, LogBurst)
	}
	t.Logf("flood: %d answers and %d debug log lines in %.1fs", answered, lines, elapsed)

	// A well-behaved client is still served once the backlog drains.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := tn.client(t, "vm0", nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(8))
	if _, err := c.Request(ctx); err != nil {
		t.Fatalf("DORA after the flood: %v", err)
	}
}

// BenchmarkDecodeAndRespond is the CPU one DISCOVER costs the server
// before its write: at MessagesPerSecond this bounds what a flooding
// guest can spend of vmpod's CPU.
func BenchmarkDecodeAndRespond(b *testing.B) {
	t := &testing.T{}
	frame := clientFrame(t, msg(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)))
	l := testLease(t)
	for b.Loop() {
		req, err := decode(frame)
		if err != nil {
			b.Fatal(err)
		}
		reply, _ := respond(req, &l)
		buildFrame(udpFrame{srcMAC: serverMAC, dstMAC: l.MAC, srcIP: l.ServerID, dstIP: replyDestination(req, reply),
			srcPort: serverPort, dstPort: clientPort, payload: reply.ToBytes()})
	}
}
