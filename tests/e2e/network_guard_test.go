package e2e

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// TestGuestCannotSpoof boots a VM pod and, from inside the guest (root,
// busybox `ip`), sends with an added IP address and then with a changed
// MAC: nothing of it leaves the pod (a sniffer on the pod's veth on the
// host sees none of it, the host answers none of it), while the pod's own
// address keeps working before, between and after. The rules survive a
// vmpod kill and restart, and one flushed while vmpod was down comes back
// with recovery. Removing the pod leaves nothing.
func TestGuestCannotSpoof(t *testing.T) {
	e := newVMEnv(t)
	f := e.podConfigs("spoof", 0, map[string]string{"vmpod.dev/memory": "192Mi"})
	podID, ctrID := e.startVM(f)
	ip := e.podIP(podID)
	waitLog(t, f.logPath, guestIPRE, 3*bootTimeout)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 60*time.Second)
	sh := func(cmd string) (string, error) {
		out, errOut, err := e.crictl("exec", "-s", ctrID, "sh", "-c", cmd)
		return out + errOut, err
	}
	mustSh := func(cmd string) string {
		t.Helper()
		out, err := sh(cmd)
		if err != nil {
			t.Fatalf("guest: %s: %v\n%s", cmd, err, out)
		}
		return out
	}
	podMAC := strings.TrimSpace(mustSh("cat /sys/class/net/eth0/address"))
	spoofIP := strings.TrimSuffix(e2eSubnet, "0/24") + "250"
	spoofMAC := "52:54:00:de:ad:01"
	netnsName := "vmpod-" + podID

	// The exact identity is in the rules.
	rules := run(t, "ip", "netns", "exec", netnsName, "nft", "list", "table", "bridge", "vmpod")
	for _, want := range []string{"ether saddr != " + podMAC + " counter", "ip saddr " + ip + " accept",
		"arp saddr ether " + podMAC + " arp saddr ip " + ip + " accept"} {
		if !strings.Contains(rules, want) {
			t.Fatalf("rules in %s lack %q:\n%s", netnsName, want, rules)
		}
	}

	sniff := sniffPod(t, podID)
	received := regexp.MustCompile(`(\d+) packets received`)
	pingGW := func(from string) bool {
		t.Helper()
		out, _ := sh("ping -c 2 -W 3 " + from + " " + e2eGateway + " 2>&1; true") // crictl exec -s prints nothing of a failed command
		m := received.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("ping from the guest printed no summary:\n%s", out)
		}
		return m[1] != "0"
	}
	if !pingGW("") {
		t.Fatal("the guest cannot ping its gateway with its own address")
	}
	if sniff.count(func(fr []byte) bool { return ipv4Src(fr) == ip }) == 0 {
		t.Fatal("the sniffer saw no frame from the pod IP: it cannot tell a drop")
	}

	// Another IP: an alias on eth0, used as the source.
	mustSh("ip addr add " + spoofIP + "/32 dev eth0")
	if pingGW("-I " + spoofIP) {
		t.Fatalf("the guest pinged its gateway from %s, an address that is not its own", spoofIP)
	}
	// Arping announces the alias (gratuitous ARP claiming spoofIP).
	sh("arping -c 2 -U -I eth0 -s " + spoofIP + " " + e2eGateway)
	mustSh("ip addr del " + spoofIP + "/32 dev eth0")
	if n := sniff.count(func(fr []byte) bool { return ipv4Src(fr) == spoofIP || arpSenderIP(fr) == spoofIP }); n > 0 {
		t.Fatalf("%d frames from %s left the pod", n, spoofIP)
	}
	if out, _ := exec.Command("ip", "neigh", "show", spoofIP).Output(); strings.Contains(string(out), "lladdr") {
		t.Fatalf("the host learned a neighbour for %s: %s", spoofIP, out)
	}
	if !pingGW("") {
		t.Fatal("the pod's own address stopped working after the spoofing attempt")
	}

	// Another MAC.
	mustSh("ip link set dev eth0 address " + spoofMAC)
	sh("arping -c 2 -U -I eth0 " + ip) // announce the pod IP at the new MAC
	if pingGW("") {
		t.Fatalf("the guest pinged its gateway from MAC %s", spoofMAC)
	}
	mustSh("ip link set dev eth0 address " + podMAC)
	if n := sniff.count(func(fr []byte) bool { return net.HardwareAddr(fr[6:12]).String() == spoofMAC }); n > 0 {
		t.Fatalf("%d frames from MAC %s left the pod", n, spoofMAC)
	}
	if out := run(t, "ip", "neigh", "show", ip); strings.Contains(out, spoofMAC) {
		t.Fatalf("the host maps %s to the spoofed MAC: %s", ip, out)
	}
	if !pingGW("") {
		t.Fatal("the pod's own MAC stopped working after the spoofing attempt")
	}
	sniff.stop()
	dropped := regexp.MustCompile(`ether saddr != \S+ counter packets (\d+)`).FindStringSubmatch(
		run(t, "ip", "netns", "exec", netnsName, "nft", "list", "table", "bridge", "vmpod"))
	if dropped == nil || dropped[1] == "0" {
		t.Fatalf("the MAC rule counted no drop: %v", dropped)
	}

	// Across a vmpod restart the rules stay; flushed while vmpod is down,
	// they come back with recovery (ServeDHCP).
	e.Kill()
	run(t, "ip", "netns", "exec", netnsName, "nft", "flush", "ruleset")
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", netnsName, "nft", "list", "table", "bridge", "vmpod").CombinedOutput()
		if strings.Contains(string(out), "ip saddr "+ip+" accept") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovery did not re-install the rules:\n%s\n%s", out, e.Log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	mustSh("ip addr add " + spoofIP + "/32 dev eth0")
	if pingGW("-I " + spoofIP) {
		t.Fatal("after the restart the guest pinged its gateway from another address")
	}
	mustSh("ip addr del " + spoofIP + "/32 dev eth0")
	if !pingGW("") {
		t.Fatal("after the restart the pod's own address does not work")
	}

	e.mustCrictl("stopp", podID)
	e.mustCrictl("rmp", podID)
	if left := networkLeftovers(t, podID); len(left) > 0 {
		t.Fatalf("left after removing the pod: %v", left)
	}
}

// TestCNITimeout runs the tests' network through a wrapper of the bridge
// plugin that hangs on ADD or DEL while a flag file exists (a shell
// waiting on a sleep that holds its stdout), with cni_timeout 3s: a hung
// ADD fails RunPodSandbox with Unavailable after the deadline and leaves
// nothing; a hung DEL fails StopPodSandbox the same way, and once the
// plugin answers again the retried stop and the removal leave nothing.
func TestCNITimeout(t *testing.T) {
	bin := t.TempDir()
	flags := t.TempDir()
	wrapper := `#!/bin/sh
if [ -e ` + flags + `/hang-$CNI_COMMAND ]; then
	sleep 3001 &
	wait
fi
exec /usr/lib/cni/bridge
`
	if err := os.WriteFile(filepath.Join(bin, "hangbridge"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := t.TempDir()
	os.Chmod(conf, 0o755)
	if err := os.WriteFile(filepath.Join(conf, "10-hang.conflist"), []byte(e2eConfList("hangbridge")), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_CNI_CONF_DIR=" + conf, "VMPOD_CNI_BIN_DIRS=" + bin + ":/usr/lib/cni",
		"VMPOD_CNI_TIMEOUT=3s"}})
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	hang := func(cmd string, on bool) {
		p := filepath.Join(flags, "hang-"+cmd)
		if on {
			os.WriteFile(p, nil, 0o644)
		} else {
			os.Remove(p)
		}
	}
	sleepers := func() string { out, _ := exec.Command("pgrep", "-af", "sleep 3001").Output(); return string(out) }

	// A hung ADD.
	hang("ADD", true)
	netnsBefore, _ := filepath.Glob("/run/netns/vmpod-*")
	reserved := len(ipReservations(t))
	t0 := time.Now()
	errOut := d.failCrictl("runp", e.podConfigs("hungadd", 0, nil).pod)
	took := time.Since(t0)
	if !strings.Contains(errOut, "code = Unavailable") || !strings.Contains(errOut, "did not finish within cni_timeout (3s)") {
		t.Fatalf("runp with a hung ADD: %s", errOut)
	}
	if took > 15*time.Second {
		t.Fatalf("runp with a hung ADD took %s, want about the 3s deadline", took)
	}
	t.Logf("runp with a hung ADD failed after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(errOut))
	if s := sleepers(); s != "" {
		t.Fatalf("the hung plugin's child still runs:\n%s", s)
	}
	if after, _ := filepath.Glob("/run/netns/vmpod-*"); len(after) != len(netnsBefore) {
		t.Fatalf("netns left after the hung ADD: %v", after)
	}
	if n := len(ipReservations(t)); n != reserved {
		t.Fatalf("IP reservations %d after the hung ADD, %d before", n, reserved)
	}
	if out := d.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods after the hung ADD: %s", out)
	}

	// A hung DEL.
	hang("ADD", false)
	podID := strings.TrimSpace(d.mustCrictl("runp", e.podConfigs("hungdel", 0, nil).pod))
	hang("DEL", true)
	t0 = time.Now()
	errOut = d.failCrictl("stopp", podID)
	took = time.Since(t0)
	if !strings.Contains(errOut, "code = Unavailable") || !strings.Contains(errOut, "CNI DEL") || took > 15*time.Second {
		t.Fatalf("stopp with a hung DEL after %s: %s", took, errOut)
	}
	t.Logf("stopp with a hung DEL failed after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(errOut))
	if s := sleepers(); s != "" {
		t.Fatalf("the hung plugin's child still runs:\n%s", s)
	}
	if _, err := os.Stat("/run/netns/vmpod-" + podID); err != nil {
		t.Fatalf("the netns went with the failed DEL; the retry could not find the ipMasq rules: %v", err)
	}
	hang("DEL", false)
	d.mustCrictl("stopp", podID)
	d.mustCrictl("rmp", podID)
	if left := networkLeftovers(t, podID); len(left) > 0 {
		t.Fatalf("left after the retried stop and the removal: %v", left)
	}
}

// podSniffer records the frames that leave a pod: those its host-side
// veth receives from the pod's netns.
type podSniffer struct {
	conn   *packet.Conn
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

// sniffPod starts a sniffer on the host end of the pod's veth.
func sniffPod(t *testing.T, podID string) *podSniffer {
	t.Helper()
	out := run(t, "ip", "-o", "link", "show", "master", e2eBridge)
	var veth string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "link-netns vmpod-"+podID) {
			f := strings.Fields(line)
			veth = strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		}
	}
	ifc, err := net.InterfaceByName(veth)
	if err != nil {
		t.Fatalf("the pod's host veth (%q): %v\n%s", veth, err, out)
	}
	c, err := packet.Listen(ifc, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &podSniffer{conn: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			if len(s.frames) < 100000 {
				s.frames = append(s.frames, bytes.Clone(buf[:n]))
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *podSniffer) stop() {
	s.conn.Close()
	<-s.done
}

// count returns how many frames received so far match.
func (s *podSniffer) count(match func([]byte) bool) int {
	time.Sleep(200 * time.Millisecond) // frames in flight
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, fr := range s.frames {
		if len(fr) >= 14 && match(fr) {
			n++
		}
	}
	return n
}

// ipv4Src is the source address of an IPv4 frame, "" for others.
func ipv4Src(fr []byte) string {
	if len(fr) < 34 || binary.BigEndian.Uint16(fr[12:14]) != 0x0800 {
		return ""
	}
	return net.IP(fr[26:30]).String()
}

// arpSenderIP is the sender IP of an ARP frame, "" for others.
func arpSenderIP(fr []byte) string {
	if len(fr) < 42 || binary.BigEndian.Uint16(fr[12:14]) != 0x0806 {
		return ""
	}
	return net.IP(fr[28:32]).String()
}
