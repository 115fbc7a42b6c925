package cni

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestGuardCost measures what the anti-spoofing guard costs, each variant
// interleaved with the others in the same rounds (VMPOD_BENCH=1, root;
// docs/security.md has the numbers):
//
//   - setup and teardown per pod: the guard through google/nftables
//     (what vmpod does), the same rules through `nft -f` and an ebtables
//     equivalent through `ebtables-restore`, both run in the netns by
//     `ip netns exec`;
//   - the data path, guard off and on: TCP throughput and a UDP 64-byte
//     packet rate (iperf3) and ping RTT from a "guest" netns through the
//     pod's bridge to a "host" netns.
//
// It reports medians with min and max; it fails only when a tool fails.
func TestGuardCost(t *testing.T) {
	if os.Getenv("VMPOD_BENCH") != "1" {
		t.Skip("a measurement: set VMPOD_BENCH=1 (root, nft, ebtables-restore, iperf3)")
	}
	rounds := 15
	if n, err := strconv.Atoi(os.Getenv("VMPOD_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	pod := guardNetNS(t)
	tap := "vmtbench0000"
	pod.Interfaces = []Interface{guardInterface(tap, false)}
	ns := filepath.Base(pod.NetNS)
	g, h := netnsPath(ns+"g"), netnsPath(ns+"h")
	for _, p := range []string{g, h} {
		if err := createNetNS(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteNetNS(p) })
	}
	benchTopology(t, pod.NetNS, g, h, tap)

	// Setup and teardown, three ways, interleaved.
	nftText := nftRules(t, pod)
	ebText := ebtablesRules(tap)
	cost := map[string][]time.Duration{}
	timeIt := func(name string, f func() error) {
		t0 := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cost[name] = append(cost[name], time.Since(t0))
	}
	for range rounds * 4 {
		timeIt("google/nftables install", func() error { return installGuard(pod) })
		timeIt("google/nftables remove", func() error { return removeGuard(pod.NetNS) })
		timeIt("nft -f install", func() error { return inNS(ns, nftText, "nft", "-f", "-") })
		timeIt("nft -f remove", func() error { return inNS(ns, "", "nft", "delete", "table", "bridge", guardTable) })
		timeIt("ebtables-restore install", func() error { return inNS(ns, ebText, "ebtables-restore") })
		timeIt("ebtables-restore remove", func() error { return inNS(ns, "", "ebtables", "-t", "nat", "--init-table") })
	}
	fmt.Printf("== guard setup/teardown per pod (one interface), %d rounds interleaved: median [min, max]\n", rounds*4)
	for _, name := range []string{"google/nftables install", "google/nftables remove", "nft -f install", "nft -f remove",
		"ebtables-restore install", "ebtables-restore remove"} {
		fmt.Printf("%-28s %s\n", name, spread(cost[name], func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }))
	}

	// The data path, guard off and on, interleaved (the order flips every
	// round).
	srv := exec.Command("ip", "netns", "exec", filepath.Base(h), "iperf3", "-s", "-B", gwIP4.String())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	time.Sleep(300 * time.Millisecond)
	data := map[string][]float64{}
	for r := range rounds {
		modes := []bool{false, true}
		if r%2 == 1 {
			modes = []bool{true, false}
		}
		for _, on := range modes {
			if on {
				if err := installGuard(pod); err != nil {
					t.Fatal(err)
				}
			} else if err := removeGuard(pod.NetNS); err != nil {
				t.Fatal(err)
			}
			key := map[bool]string{false: "off", true: "on"}[on]
			data["tcp "+key] = append(data["tcp "+key], iperf(t, g, "-t", "2"))
			data["udp64 "+key] = append(data["udp64 "+key], iperf(t, g, "-t", "2", "-u", "-b", "0", "-l", "64"))
			data["rtt "+key] = append(data["rtt "+key], pingRTT(t, g))
		}
	}
	if err := installGuard(pod); err != nil { // the frames really crossed the guard
		t.Fatal(err)
	}
	fmt.Printf("== data path through the pod bridge, %d rounds, guard off/on interleaved: median [min, max]\n", rounds)
	for _, m := range []struct{ key, unit string }{{"tcp", "Gbit/s"}, {"udp64", "kpps"}, {"rtt", "µs"}} {
		format := func(v float64) string { return fmt.Sprintf("%.1f %s", v, m.unit) }
		for _, mode := range []string{"off", "on"} {
			fmt.Printf("%-6s guard %-3s %s\n", m.key, mode, spread(data[m.key+" "+mode], format))
		}
		// The same round's on minus off: the machine's load moves both.
		var diff []float64
		for i := range data[m.key+" on"] {
			diff = append(diff, data[m.key+" on"][i]-data[m.key+" off"][i])
		}
		fmt.Printf("%-6s on - off   %s (paired by round)\n", m.key, spread(diff, format))
	}
}

// benchTopology: g's "gv" is the guest NIC (pod MAC and IP), bridged into
// the pod netns through the port named tap; h's "hv" is the host, bridged
// through "eth0".
func benchTopology(t *testing.T, podNS, g, h, tap string) {
	t.Helper()
	ph, err := nsHandle(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ph.LinkAdd(br))
	must(ph.LinkSetUp(br))
	for _, l := range []struct{ port, peer, ns, addr string }{{tap, "gv", g, podIP4.String()}, {"eth0", "hv", h, gwIP4.String()}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.port}, PeerName: l.peer}
		if l.peer == "gv" {
			v.PeerHardwareAddr = podMAC
		}
		must(ph.LinkAdd(v))
		must(ph.LinkSetMaster(v, br))
		must(ph.LinkSetUp(v))
		peer, err := ph.LinkByName(l.peer)
		must(err)
		nsFd, err := os.Open(l.ns)
		must(err)
		must(ph.LinkSetNsFd(peer, int(nsFd.Fd())))
		nsFd.Close()
		name := filepath.Base(l.ns)
		for _, args := range [][]string{{"addr", "add", l.addr + "/24", "dev", l.peer}, {"link", "set", l.peer, "up"}, {"link", "set", "lo", "up"}} {
			if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip -n %s %v: %v\n%s", name, args, err, out)
			}
		}
	}
}

// nftRules is the guard as `nft -f` input: what installGuard makes, as
// nft lists it (counters zeroed), after a table delete for the replace.
func nftRules(t *testing.T, att *Attachment) string {
	t.Helper()
	if err := installGuard(att); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(att.NetNS), "nft", "list", "table", "bridge", guardTable).Output()
	if err != nil {
		t.Fatal(err)
	}
	removeGuard(att.NetNS)
	return "table bridge vmpod {}\ndelete table bridge vmpod\n" +
		regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(string(out), "counter")
}

// ebtablesRules is an ebtables equivalent of the IPv4 guard (what libvirt's
// nwfilter "clean-traffic" would generate for a host-netns tap), loaded as
// one ebtables-restore of the nat table.
func ebtablesRules(tap string) string {
	c := "from-" + tap
	return strings.Join([]string{
		"*nat",
		":PREROUTING ACCEPT", ":OUTPUT ACCEPT", ":POSTROUTING ACCEPT", ":" + c + " DROP",
		"-A PREROUTING -i " + tap + " -j " + c,
		"-A " + c + " -s ! " + podMAC.String() + " -j DROP",
		"-A " + c + " -p ARP --arp-mac-src " + podMAC.String() + " --arp-ip-src " + podIP4.String() + " -j ACCEPT",
		"-A " + c + " -p ARP --arp-mac-src " + podMAC.String() + " --arp-ip-src 0.0.0.0 -j ACCEPT",
		"-A " + c + " -p IPv4 --ip-proto udp --ip-sport 67 -j DROP",
		"-A " + c + " -p IPv4 --ip-src 0.0.0.0 --ip-proto udp --ip-sport 68 --ip-dport 67 -j ACCEPT",
		"-A " + c + " -p IPv4 --ip-src " + podIP4.String() + " -j ACCEPT",
		"", // ebtables-restore wants the final newline
	}, "\n")
}

func inNS(ns, stdin string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %v\n%s", args, err, out)
	}
	return nil
}

var (
	iperfTCP = regexp.MustCompile(`([\d.]+) (G|M|K)bits/sec\s+\d*\s*receiver`)
	iperfUDP = regexp.MustCompile(`(\d+)/(\d+) \([\d.e+-]+%\)\s+receiver`)
	rttTime  = regexp.MustCompile(`time=([\d.]+) ms`)
)

// iperf runs the client in g and returns Gbit/s (TCP) or received kpps
// (UDP; -t must be "2").
func iperf(t *testing.T, g string, args ...string) float64 {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(g), "iperf3", "-c", gwIP4.String()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iperf3 %v: %v\n%s", args, err, out)
	}
	if slices.Contains(args, "-u") {
		m := iperfUDP.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("iperf3 UDP output:\n%s", out)
		}
		lost, _ := strconv.ParseFloat(m[1], 64)
		total, _ := strconv.ParseFloat(m[2], 64)
		return (total - lost) / 2 / 1000
	}
	m := iperfTCP.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("iperf3 TCP output:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v / map[string]float64{"G": 1, "M": 1000, "K": 1e6}[m[2]]
}

// pingRTT is the median RTT in µs of 400 pings from g to the host (the
// median, not ping's mean: one descheduled reply on this shared machine
// moves a mean by tens of µs).
func pingRTT(t *testing.T, g string) float64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(g), "ping", "-c", "400", "-i", "0.002", gwIP4.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	var rtts []float64
	for _, m := range rttTime.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v*1000)
	}
	if len(rtts) < 300 {
		t.Fatalf("ping: %d replies of 400:\n%s", len(rtts), out)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// spread formats the median and the range of s.
func spread[T time.Duration | float64](s []T, f func(T) string) string {
	s = slices.Sorted(slices.Values(s))
	if len(s) == 0 {
		return "no data"
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%s [%s, %s]", f(med), f(s[0]), f(s[len(s)-1]))
}
