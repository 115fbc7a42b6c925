package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The tests' pod network: Debian's real bridge + host-local + portmap
// plugins on a private subnet that exists only on this machine (a bridge
// the tests create; the host's own interfaces are never touched). ipMasq
// is on so that the leak checks see the bridge plugin's per-pod iptables
// rules go; the guests send nothing beyond the subnet. Each run
// of the tests has its own bridge and /24 in 10.251.0.0/16, picked from its
// process ID, so two runs on one machine (two checkouts) do not hand out
// the same addresses on one segment or delete each other's bridge.
const e2eNetName = "vmpod-e2e"

var (
	e2eBridge  string // vmpode2e<N>
	e2eSubnet  string // 10.251.<N>.0/24
	e2eGateway string // 10.251.<N>.1
	cniConfDir string // VMPOD_CNI_CONF_DIR of every test daemon
	cniIPAMDir string // host-local's dataDir: one reservation file per pod IP
)

// e2eConfList is the tests' network; bridgePlugin is "bridge" or a
// wrapper of it.
func e2eConfList(bridgePlugin string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": %q, "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, e2eNetName, bridgePlugin, e2eBridge, cniIPAMDir, e2eSubnet, e2eGateway)
}

// setupCNI writes the tests' CNI config; the returned function removes it
// and the bridge the plugin made.
func setupCNI() (func(), error) {
	dir, err := os.MkdirTemp("", "vmpod-e2e-cni-")
	if err != nil {
		return nil, err
	}
	n := os.Getpid()%250 + 1
	e2eBridge = fmt.Sprintf("vmpode2e%d", n)
	e2eSubnet = fmt.Sprintf("10.251.%d.0/24", n)
	e2eGateway = fmt.Sprintf("10.251.%d.1", n)
	cniConfDir = filepath.Join(dir, "net.d")
	cniIPAMDir = filepath.Join(dir, "ipam")
	if err := os.MkdirAll(cniConfDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cniConfDir, "10-vmpod-e2e.conflist"), []byte(e2eConfList("bridge")), 0o644); err != nil {
		return nil, err
	}
	return func() {
		exec.Command("ip", "link", "del", e2eBridge).Run()
		os.RemoveAll(dir)
	}, nil
}

// ipReservations lists host-local's reserved IPs of the tests' network.
func ipReservations(t *testing.T) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(cniIPAMDir, e2eNetName))
	var ips []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "10.") {
			ips = append(ips, n)
		}
	}
	return ips
}

// networkLeftovers lists what of the given sandboxes' networks is still on
// the host: netns, taps (host or netns), veths on the tests' bridge, IP
// reservations, iptables rules naming the sandbox.
func networkLeftovers(t *testing.T, sandboxIDs ...string) []string {
	t.Helper()
	var left []string
	for _, id := range sandboxIDs {
		if _, err := os.Stat("/run/netns/vmpod-" + id); err == nil {
			left = append(left, "netns vmpod-"+id)
		}
		if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), "vmt"+id[:10]) {
			left = append(left, "tap vmt"+id[:10]+"*")
		}
	}
	// The network's bridge and IPAM are shared by the tests: look for these
	// sandboxes' veths and reservations only.
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", e2eBridge).Output(); len(out) > 0 {
		for _, id := range sandboxIDs {
			if strings.Contains(string(out), "link-netns vmpod-"+id) {
				left = append(left, "a veth on "+e2eBridge+" into vmpod-"+id)
			}
		}
	}
	for _, ip := range ipReservations(t) {
		b, _ := os.ReadFile(filepath.Join(cniIPAMDir, e2eNetName, ip))
		for _, id := range sandboxIDs {
			if strings.Contains(string(b), id) {
				left = append(left, "host-local reservation "+ip+" of "+id)
			}
		}
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		for _, id := range sandboxIDs {
			if strings.Contains(string(out), id) {
				left = append(left, "iptables rules naming "+id)
			}
		}
	}
	return left
}

// foreignNetnsSockets counts the daemon's sockets that live in another
// network namespace (the DHCP servers' packet sockets in pod netns): a
// socket of the daemon that none of its own netns's tables lists.
func foreignNetnsSockets(t *testing.T, pid int) int {
	t.Helper()
	known := map[string]bool{}
	for _, tbl := range []string{"tcp", "tcp6", "udp", "udp6", "unix", "packet", "raw", "raw6", "netlink", "udplite", "icmp", "icmp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, tbl))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			for _, f := range strings.Fields(line) {
				known[f] = true // inode columns; other columns never look like inodes of sockets we hold
			}
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		if !known[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			n++
		}
	}
	return n
}
