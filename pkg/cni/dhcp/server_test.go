package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"

	"github.com/vishvananda/netns"
	"github.com/vmpod/vmpod/pkg/cni/nsenter"
	"golang.org/x/sys/unix"
)

// TestServerInNetNS runs the server against nclient4 in a netns of its own
// wired like a pod: a bridge, the "tap" (one end of a veth pair, bridged)
// whose peer "vm0" plays the VM's NIC, and a second bridged veth pair
// "pod1" playing another pod on the same segment. Root only.
func TestServerInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a netns, links and packet sockets")
	}
	tn := newTestNet(t)
	tap := tn.veth(t, "tap0", "vm0", vmMAC)
	tn.veth(t, "pod1br", "pod1", foreignMAC)

	var logs syncBuffer
	lease := testLease(t)
	srv, err := Start(Config{
		NetNSPath: tn.path,
		Interface: "tap0",
		ServerMAC: serverMAC,
		Lease:     lease,
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			srv.Close()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// DORA: the VM gets the lease with every option.
	vm := tn.client(t, "vm0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	got, err := vm.Request(ctx)
	if err != nil {
		t.Fatalf("DORA: %v", err)
	}
	if !got.ACK.YourIPAddr.Equal(leaseIP) {
		t.Fatalf("leased %s, want %s", got.ACK.YourIPAddr, leaseIP)
	}
	checkLeaseOptions(t, got.ACK, &lease, true)
	checkLeaseOptions(t, got.Offer, &lease, true)
	waitStats(t, srv, 2, 0)

	// Renewal as a configured guest sends it: unicast IP and Ethernet to the
	// gateway, which the bridge would never hand to its own stack.
	renewer := tn.unicastClient(t, "vm0", net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe})
	renewed, err := renewer.Renew(ctx, got)
	if err != nil {
		t.Fatalf("unicast renew: %v", err)
	}
	if renewed.ACK.MessageType() != dhcpv4.MessageTypeAck || !renewed.ACK.YourIPAddr.Equal(leaseIP) {
		t.Errorf("renew answered %s for %s", renewed.ACK.MessageType(), renewed.ACK.YourIPAddr)
	}

	// Our own MAC asking for another address is NAKed (INIT-REBOOT).
	reboot, err := dhcpv4.New(dhcpv4.WithHwAddr(vmMAC), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(otherIP)))
	if err != nil {
		t.Fatal(err)
	}
	nak, err := vm.SendAndRead(ctx, nclient4.DefaultServers, reboot, nil)
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("init-reboot for %s: %v, %v; want a NAK", otherIP, nak, err)
	}
	waitStats(t, srv, 4, 0)
	answered, ignored := srv.Stats()

	// A foreign chaddr from the VM's port gets nothing and is counted.
	spoof := tn.client(t, "vm0", nclient4.WithHWAddr(foreignMAC), nclient4.WithTimeout(1500*time.Millisecond), nclient4.WithRetry(1))
	if offer, err := spoof.DiscoverOffer(ctx); !errors.Is(err, nclient4.ErrNoResponse) {
		t.Errorf("foreign chaddr: got %v, %v; want no response", offer, err)
	}
	if a, i := srv.Stats(); a != answered || i == ignored {
		t.Errorf("foreign chaddr: Stats() = %d, %d; want %d answered and more than %d ignored", a, i, answered, ignored)
	}

	// Another pod's DHCP, flooded by the bridge out of the tap, is not even
	// seen: the kernel marks it PACKET_OUTGOING on the tap.
	answered, ignored = srv.Stats()
	txBefore := tn.txPackets(t, tap)
	other := tn.client(t, "pod1", nclient4.WithTimeout(1500*time.Millisecond), nclient4.WithRetry(1))
	if offer, err := other.DiscoverOffer(ctx); !errors.Is(err, nclient4.ErrNoResponse) {
		t.Errorf("other pod: got %v, %v; want no response", offer, err)
	}
	if tx := tn.txPackets(t, tap); tx == txBefore {
		t.Error("the bridge did not flood the other pod's DISCOVER to the tap; the test proves nothing")
	}
	if a, i := srv.Stats(); a != answered || i != ignored {
		t.Errorf("other pod: Stats() = %d, %d; want unchanged %d, %d", a, i, answered, ignored)
	}

	// The tap going down and up (as when QEMU restarts) costs one ENETDOWN
	// read error; the socket keeps serving.
	if err := tn.h.LinkSetDown(tap); err != nil {
		t.Fatal(err)
	}
	if err := tn.h.LinkSetUp(tap); err != nil {
		t.Fatal(err)
	}
	again := tn.client(t, "vm0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if _, err := again.Request(ctx); err != nil {
		t.Errorf("DORA after the tap went down and up: %v", err)
	}
	if !strings.Contains(logs.String(), "DHCP interface went down") {
		t.Error("the tap going down was not logged")
	}

	if n := strings.Count(logs.String(), "DHCP lease handed out"); n != 1 {
		t.Errorf("lease logged at Info %d times, want once", n)
	}

	// Close stops the goroutine, and stays closed.
	closed = true
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if stacks := serveGoroutines(); stacks != "" {
		t.Errorf("serve goroutine still running after Close:\n%s", stacks)
	}
}

// waitStats waits up to a second for srv's counters to reach the wanted
// values: the client can see a reply before the server counts it.
func waitStats(t *testing.T, srv *Server, answered, ignored uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		a, i := srv.Stats()
		if a == answered && i == ignored {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Stats() = %d answered, %d ignored; want %d, %d", a, i, answered, ignored)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveGoroutines returns the stacks of running (*Server).serve goroutines,
// waiting up to a second for them to end: Close returns once serve has
// closed done, and serve's goroutine is gone a moment later (under load,
// or the race detector, that moment shows).
func serveGoroutines() string {
	deadline := time.Now().Add(time.Second)
	for {
		stacks := serveStacks()
		if stacks == "" || time.Now().After(deadline) {
			return stacks
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serveStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "dhcp.(*Server).serve") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// testNet is a named netns of the test's own with a bridge in it.
type testNet struct {
	name, path string
	h          *netlink.Handle
	bridge     netlink.Link
}

// newTestNet creates the netns and its bridge; the test skips when it
// cannot create a netns. Everything is deleted at cleanup.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	name := fmt.Sprintf("vmpod-dhcptest-%08x", rand.Uint32())
	ns, err := createNamedNetNS(name)
	if err != nil {
		t.Skipf("cannot create a netns: %v", err)
	}
	tn := &testNet{name: name, path: filepath.Join("/run/netns", name)}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	if tn.h, err = netlink.NewHandleAt(ns); err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(tn.h.Close)
	tn.bridge = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := tn.h.LinkAdd(tn.bridge); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	t.Cleanup(func() { tn.del(t, tn.bridge) })
	if err := tn.h.LinkSetUp(tn.bridge); err != nil {
		t.Fatalf("bridge up: %v", err)
	}
	return tn
}

// createNamedNetNS creates a named netns on a thread of its own that is
// thrown away if it cannot return to the original netns.
func createNamedNetNS(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			ch <- result{ns: ns, err: errors.Join(err, serr)}
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns, err: err}
	}()
	r := <-ch
	if r.err != nil && r.ns.IsOpen() {
		r.ns.Close()
		netns.DeleteNamed(name)
	}
	return r.ns, r.err
}

// veth adds a veth pair whose first end is a bridge port and whose peer has
// mac, both up; it returns the bridged end.
func (tn *testNet) veth(t *testing.T, port, peer string, mac net.HardwareAddr) netlink.Link {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: peer, PeerHardwareAddr: mac}
	if err := tn.h.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s/%s: %v", port, peer, err)
	}
	t.Cleanup(func() { tn.del(t, v) }) // takes the peer with it
	p, err := tn.h.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{tn.h.LinkSetMaster(v, tn.bridge), tn.h.LinkSetUp(v), tn.h.LinkSetUp(p)} {
		if err != nil {
			t.Fatalf("wire %s/%s: %v", port, peer, err)
		}
	}
	waitOperUp(t, tn.h, port, peer)
	return v
}

// waitOperUp waits until the links are operationally up. A veth's carrier
// reaches its operstate, and the bridge (which forwards through a port
// only then), by the kernel's linkwatch work, which runs at most once a
// second for all the node's links: with other tests making links at the
// same time, the first frames after LinkSetUp could be dropped, and a DHCP
// client retransmits.
func waitOperUp(t *testing.T, h *netlink.Handle, names ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range names {
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
}

// del deletes a link of the test netns.
func (tn *testNet) del(t *testing.T, l netlink.Link) {
	if err := tn.h.LinkDel(l); err != nil {
		t.Errorf("delete link %s: %v", l.Attrs().Name, err)
	}
}

// txPackets returns how many frames link has sent.
func (tn *testNet) txPackets(t *testing.T, link netlink.Link) uint64 {
	t.Helper()
	l, err := tn.h.LinkByName(link.Attrs().Name)
	if err != nil || l.Attrs().Statistics == nil {
		t.Fatalf("stats of %s: %v", link.Attrs().Name, err)
	}
	return l.Attrs().Statistics.TxPackets
}

// client opens an nclient4 client (broadcast raw socket) on iface.
func (tn *testNet) client(t *testing.T, iface string, opts ...nclient4.ClientOpt) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	err := nsenter.Run(tn.path, func() (err error) {
		c, err = nclient4.New(iface, opts...)
		return err
	})
	if err != nil {
		t.Fatalf("nclient4 on %s: %v", iface, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// unicastClient opens an nclient4 client that sends as a configured guest
// renews: from the leased IP to the server ID, in frames to gwMAC. It
// receives only IP packets addressed to the leased IP.
func (tn *testNet) unicastClient(t *testing.T, iface string, gwMAC net.HardwareAddr) *nclient4.Client {
	t.Helper()
	var raw *packet.Conn
	err := nsenter.Run(tn.path, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		raw, err = packet.Listen(ifc, packet.Datagram, unix.ETH_P_IP, nil)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", iface, err)
	}
	conn := nclient4.NewBroadcastUDPConn(unicastConn{raw, gwMAC}, &net.UDPAddr{IP: leaseIP, Port: clientPort})
	c, err := nclient4.NewWithConn(conn, vmMAC, nclient4.WithServerAddr(&net.UDPAddr{IP: gatewayIP, Port: serverPort}),
		nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// unicastConn sends every packet to one MAC, where nclient4's own raw
// connection always broadcasts.
type unicastConn struct {
	*packet.Conn
	dst net.HardwareAddr
}

// WriteTo sends b to c.dst whatever addr says.
func (c unicastConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	return c.Conn.WriteTo(b, &packet.Addr{HardwareAddr: c.dst})
}

// syncBuffer is a bytes.Buffer safe for the server's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
