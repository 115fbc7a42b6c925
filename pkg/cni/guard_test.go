package cni

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vmpod/vmpod/pkg/cni/nsenter"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var (
	podMAC   = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01}
	otherMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0x02}
	bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	podIP4   = netip.MustParseAddr("10.250.3.5")
	otherIP4 = netip.MustParseAddr("10.250.3.99")
	gwIP4    = netip.MustParseAddr("10.250.3.1")
	podIP6   = netip.MustParseAddr("fd00:250:3::5")
	otherIP6 = netip.MustParseAddr("fd00:250:3::99")
	podLL    = netip.MustParseAddr("fe80::5054:ff:feaa:bb01") // EUI-64 of podMAC
)

func guardInterface(tap string, v6 bool) Interface {
	ifc := Interface{Name: "eth0", MAC: podMAC.String(), Tap: tap, Bridge: "vmbr0",
		Addresses: []Address{{Prefix: netip.PrefixFrom(podIP4, 24), Gateway: gwIP4}}}
	if v6 {
		ifc.Addresses = append(ifc.Addresses, Address{Prefix: netip.PrefixFrom(podIP6, 64)})
	}
	return ifc
}

func TestGuardRulesRefuseBadInterfaces(t *testing.T) {
	good := guardInterface("vmt0123456789", true)
	if _, err := guardRules(good); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Interface){
		"no MAC":        func(i *Interface) { i.MAC = "" },
		"multicast MAC": func(i *Interface) { i.MAC = "01:00:5e:00:00:01" },
		"EUI-64 MAC":    func(i *Interface) { i.MAC = "02:00:00:00:00:00:00:01" },
		"no tap":        func(i *Interface) { i.Tap = "" },
		"tap too long":  func(i *Interface) { i.Tap = "vmt0123456789abcdef" },
	} {
		ifc := good
		mutate(&ifc)
		if _, err := guardRules(ifc); err == nil {
			t.Errorf("%s: rules built for %+v", name, ifc)
		}
	}
	if got := linkLocal(podMAC); got != podLL {
		t.Errorf("linkLocal(%s) = %s, want %s", podMAC, got, podLL)
	}
}

// guardNetNS makes a pod-like netns for a guard test and deletes it at the
// end; it skips without root.
func guardNetNS(t *testing.T) *Attachment {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	att := &Attachment{SandboxID: fmt.Sprintf("guardtest%d", os.Getpid()), NetNS: netnsPath(fmt.Sprintf("guardtest%d", os.Getpid()))}
	if err := createNetNS(att.NetNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNetNS(att.NetNS) })
	return att
}

func nftList(t *testing.T, att *Attachment) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft (Debian package nftables, installed by hack/install-deps.sh) is needed to read the rules back")
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(att.NetNS), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return string(out)
}

// TestGuardRulesInstalledAndRemoved checks the exact rules in the netns
// against testdata/guard.nft (`go test -update` rewrites it), that
// installing again replaces them, and that removal leaves nothing.
func TestGuardRulesInstalledAndRemoved(t *testing.T) {
	att := guardNetNS(t)
	att.Interfaces = []Interface{guardInterface("vmtguard0000", true), guardInterface("vmtguard0001", false)}
	att.Interfaces[1].Name, att.Interfaces[1].MAC = "net1", otherMAC.String()
	for range 2 { // the second install replaces the first
		if err := installGuard(att); err != nil {
			t.Fatal(err)
		}
	}
	got := nftList(t, att)
	golden := filepath.Join("testdata", "guard.nft")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("rules in the netns differ from %s (go test -update rewrites it):\n%s", golden, got)
	}
	if !hasGuard(att.NetNS) {
		t.Fatal("hasGuard is false with the table installed")
	}
	if left := LeakCheck(att); !strings.Contains(fmt.Sprint(left), "nftables table bridge vmpod") {
		t.Fatalf("LeakCheck does not report the table: %v", left)
	}
	for range 2 { // removal is idempotent
		if err := removeGuard(att.NetNS); err != nil {
			t.Fatal(err)
		}
	}
	if hasGuard(att.NetNS) {
		t.Fatal("hasGuard is true after removeGuard")
	}
	if out := nftList(t, att); strings.TrimSpace(out) != "" {
		t.Fatalf("ruleset after removeGuard:\n%s", out)
	}
	if err := removeGuard("/run/netns/vmpod-no-such-netns"); err != nil {
		t.Fatalf("removeGuard of a missing netns: %v", err)
	}
}

// TestGuardDropsSpoofedFrames wires a netns as a pod (a bridge, the VM's
// "tap" as a bridged veth whose peer plays the guest, a second bridged
// veth whose peer "sink" sees what the bridge lets out) and sends frames
// from the guest side: without the guard all of them get through (so the
// test can see a drop), with it only those carrying the pod's identity.
func TestGuardDropsSpoofedFrames(t *testing.T) {
	att := guardNetNS(t)
	tap := "vmtguard0000"
	h, err := nsHandle(att.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, ifn := range []string{"all", "default"} {
		if err := disableIPv6(att.NetNS, ifn); err != nil { // no stray IPv6 chatter on the sink
			t.Fatal(err)
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{tap, "guest"}, {"eth0", "sink"}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}
		if err := h.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		peer, _ := h.LinkByName(pair[1])
		for _, err := range []error{h.LinkSetMaster(v, br), h.LinkSetUp(v), h.LinkSetUp(peer)} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	// A bridge forwards through a port once the port is operationally up,
	// which the kernel's linkwatch work says at most once a second for all
	// the node's links: with other tests making links at the same time,
	// frames sent at once were dropped ("0 of 22 frames crossed").
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range []string{tap, "guest", "eth0", "sink"} {
		for {
			l, err := h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is still %s after 10s", name, l.Attrs().OperState)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	guest, sink := openPacket(t, att.NetNS, "guest"), openPacket(t, att.NetNS, "sink")

	type frame struct {
		name string
		pass bool // with the guard of a pod with IPv6
		b    []byte
	}
	udp4 := func(src netip.Addr, sport, dport uint16) []byte {
		return ipv4(src, gwIP4, protoUDP, udp(sport, dport, nil))
	}
	na := func(target netip.Addr) []byte {
		return icmp6(icmpv6NeighborAdvert, append(make([]byte, 4), target.AsSlice()...))
	}
	frames := []frame{
		{"IPv4 from the pod", true, eth(podMAC, etherTypeIPv4, udp4(podIP4, 40000, 80))},
		{"DHCP DISCOVER from 0.0.0.0", true, eth(podMAC, etherTypeIPv4, ipv4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), protoUDP, udp(68, 67, nil)))},
		{"ARP from the pod", true, eth(podMAC, etherTypeARP, arp(podMAC, podIP4))},
		{"ARP probe from 0.0.0.0", true, eth(podMAC, etherTypeARP, arp(podMAC, netip.IPv4Unspecified()))},
		{"IPv6 from the pod", true, eth(podMAC, etherTypeIPv6, ipv6(podIP6, protoUDP, udp(40000, 80, nil)))},
		{"IPv6 from the EUI-64 link-local", true, eth(podMAC, etherTypeIPv6, ipv6(podLL, protoICMPv6, icmp6(128, make([]byte, 4))))},
		{"neighbour advertisement for the pod", true, eth(podMAC, etherTypeIPv6, ipv6(podLL, protoICMPv6, na(podIP6)))},
		{"DAD neighbour solicitation from ::", true, eth(podMAC, etherTypeIPv6, ipv6(netip.IPv6Unspecified(), protoICMPv6, icmp6(icmpv6NeighborSolict, append(make([]byte, 4), podIP6.AsSlice()...))))},

		{"IPv4 from another IP", false, eth(podMAC, etherTypeIPv4, udp4(otherIP4, 40000, 80))},
		{"IPv4 from the pod IP with another MAC", false, eth(otherMAC, etherTypeIPv4, udp4(podIP4, 40000, 80))},
		{"ARP claiming another IP", false, eth(podMAC, etherTypeARP, arp(podMAC, otherIP4))},
		{"ARP claiming another MAC", false, eth(podMAC, etherTypeARP, arp(otherMAC, podIP4))},
		{"ARP from another MAC", false, eth(otherMAC, etherTypeARP, arp(otherMAC, podIP4))},
		{"UDP from 0.0.0.0 that is not DHCP", false, eth(podMAC, etherTypeIPv4, udp4(netip.IPv4Unspecified(), 68, 80))},
		{"DHCP server answer from the pod", false, eth(podMAC, etherTypeIPv4, udp4(podIP4, 67, 68))},
		{"VLAN-tagged IPv4 from the pod", false, eth(podMAC, 0x8100, append([]byte{0, 5, 0x08, 0x00}, udp4(podIP4, 40000, 80)...))},
		{"another ethertype", false, eth(podMAC, 0x88b5, make([]byte, 46))},
		{"IPv6 from another address", false, eth(podMAC, etherTypeIPv6, ipv6(otherIP6, protoUDP, udp(40000, 80, nil)))},
		{"neighbour advertisement for another address", false, eth(podMAC, etherTypeIPv6, ipv6(podLL, protoICMPv6, na(otherIP6)))},
		{"router advertisement", false, eth(podMAC, etherTypeIPv6, ipv6(podLL, protoICMPv6, icmp6(icmpv6RouterAdvert, make([]byte, 12))))},
		{"DHCPv6 server answer", false, eth(podMAC, etherTypeIPv6, ipv6(podLL, protoUDP, udp(547, 546, nil)))},
		{"UDP from :: that is not DAD", false, eth(podMAC, etherTypeIPv6, ipv6(netip.IPv6Unspecified(), protoUDP, udp(40000, 80, nil)))},
	}
	send := func() map[string]bool {
		got := map[string]bool{}
		marks := map[string]string{}
		for i, f := range frames {
			mark := fmt.Sprintf("vmpod-guard-%02d", i)
			marks[mark] = f.name
			if _, err := guest.WriteTo(append(append([]byte{}, f.b...), mark...), &packet.Addr{HardwareAddr: bcastMAC}); err != nil {
				t.Fatalf("send %s: %v", f.name, err)
			}
		}
		buf := make([]byte, 2048)
		sink.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := sink.ReadFrom(buf)
			if err != nil {
				return got
			}
			for mark, name := range marks {
				if bytes.Contains(buf[:n], []byte(mark)) {
					got[name] = true
				}
			}
		}
	}
	// Without the guard every frame crosses the bridge.
	if got := send(); len(got) != len(frames) {
		var missing []string
		for _, f := range frames {
			if !got[f.name] {
				missing = append(missing, f.name)
			}
		}
		t.Fatalf("without the guard %d of %d frames crossed the bridge (missing: %q): the test cannot tell a drop", len(got), len(frames), missing)
	}
	att.Interfaces = []Interface{guardInterface(tap, true)}
	if err := installGuard(att); err != nil {
		t.Fatal(err)
	}
	got := send()
	for _, f := range frames {
		if got[f.name] != f.pass {
			t.Errorf("%s: crossed = %v, want %v", f.name, got[f.name], f.pass)
		}
	}
	// A pod without IPv6 addresses: no IPv6 at all.
	att.Interfaces = []Interface{guardInterface(tap, false)}
	if err := installGuard(att); err != nil {
		t.Fatal(err)
	}
	got = send()
	for _, f := range frames {
		want := f.pass && !bytes.Equal(f.b[12:14], be16(etherTypeIPv6))
		if got[f.name] != want {
			t.Errorf("pod without IPv6: %s: crossed = %v, want %v", f.name, got[f.name], want)
		}
	}
}

// openPacket opens a raw packet socket on ifname in the netns at path.
func openPacket(t *testing.T, path, ifname string) *packet.Conn {
	t.Helper()
	var c *packet.Conn
	err := nsenter.Run(path, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifc, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", ifname, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Frame builders: just enough header for the bridge and nftables to parse.

func eth(src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, bcastMAC...), src...), be16(etherType)...)
	return append(b, payload...)
}

func ipv4(src, dst netip.Addr, proto byte, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)+len("vmpod-guard-00")))
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	// br_netfilter, when loaded, drops IPv4 with a bad header checksum.
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, l4...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)+len("vmpod-guard-00")))
	return append(h, payload...)
}

func arp(sha net.HardwareAddr, spa netip.Addr) []byte {
	b := []byte{0, 1, 0x08, 0x00, 6, 4, 0, 1}
	b = append(append(b, sha...), spa.AsSlice()...)
	b = append(b, make([]byte, 6)...)
	return append(b, gwIP4.AsSlice()...)
}

func ipv6(src netip.Addr, next byte, l4 []byte) []byte {
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, next, 255
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)+len("vmpod-guard-00")))
	copy(h[8:], src.AsSlice())
	copy(h[24:], netip.MustParseAddr("ff02::1").AsSlice())
	return append(h, l4...)
}

func icmp6(typ byte, body []byte) []byte { return append([]byte{typ, 0, 0, 0}, body...) }
