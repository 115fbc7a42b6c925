package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

func TestLoadConfListPicksFirstValidByName(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := loadConfList(dir); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("empty dir: got %v, want FailedPrecondition naming %s", err, dir)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("05-broken.conflist", `{"name": `)
	write("20-b.conf", `{"cniVersion":"1.0.0","name":"b","type":"bridge"}`)
	write("10-a.conflist", `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`)
	list, file, err := loadConfList(dir)
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "a" || filepath.Base(file) != "10-a.conflist" || len(list.Plugins) != 2 {
		t.Fatalf("got %s from %s with %d plugins, want a from 10-a.conflist with 2", list.Name, file, len(list.Plugins))
	}
	os.Remove(filepath.Join(dir, "10-a.conflist"))
	list, _, err = loadConfList(dir)
	if err != nil || list.Name != "b" || len(list.Plugins) != 1 {
		t.Fatalf("single .conf: got %v, %v", list, err)
	}
}

func TestInterfacesFromResult(t *testing.T) {
	zero, one, host := 0, 1, 2
	_, a1, _ := net.ParseCIDR("10.1.0.5/24")
	a1.IP = net.ParseIP("10.1.0.5")
	_, a2, _ := net.ParseCIDR("10.2.0.7/16")
	a2.IP = net.ParseIP("10.2.0.7")
	_, a6, _ := net.ParseCIDR("fd00::5/64")
	a6.IP = net.ParseIP("fd00::5")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	_, svc, _ := net.ParseCIDR("10.96.0.0/12")
	r := &current.Result{
		Interfaces: []*current.Interface{
			{Name: "eth0", Mac: "52:54:00:00:00:01", Sandbox: "/run/netns/x"},
			{Name: "net1", Mac: "52:54:00:00:00:02", Sandbox: "/run/netns/x"},
			{Name: "vethhost", Mac: "aa:aa:aa:aa:aa:aa"},
		},
		IPs: []*current.IPConfig{
			{Interface: &zero, Address: *a1, Gateway: net.ParseIP("10.1.0.1")},
			{Interface: &one, Address: *a2, Gateway: net.ParseIP("10.2.0.1")},
			{Interface: &zero, Address: *a6},
			{Interface: &host, Address: *a1},
		},
		Routes: []*types.Route{{Dst: *def}, {Dst: *svc, GW: net.ParseIP("10.2.0.1")}},
	}
	ifcs, err := interfacesFromResult(r, &Attachment{SandboxID: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(ifcs)
	want := `[{"name":"eth0","mac":"52:54:00:00:00:01","mtu":0,"tap":"vmt012345678900","bridge":"vmbr0",` +
		`"addresses":[{"prefix":"10.1.0.5/24","gateway":"10.1.0.1"},{"prefix":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0"}]},` +
		`{"name":"net1","mac":"52:54:00:00:00:02","mtu":0,"tap":"vmt012345678901","bridge":"vmbr1",` +
		`"addresses":[{"prefix":"10.2.0.7/16","gateway":"10.2.0.1"}],"routes":[{"dst":"10.96.0.0/12","gw":"10.2.0.1"}]}]`
	if string(got) != want {
		t.Fatalf("interfaces:\n got %s\nwant %s", got, want)
	}
	att := &Attachment{Interfaces: ifcs}
	if ips := fmt.Sprint(att.IPs()); ips != "[10.1.0.5 10.2.0.7 fd00::5]" {
		t.Fatalf("IPs() = %s", ips)
	}
	if _, err := interfacesFromResult(&current.Result{Interfaces: []*current.Interface{{Name: "vethhost"}}}, att); err == nil {
		t.Fatal("a result with no interface in the netns must be refused")
	}
}

func TestTapNamesFitIFNAMSIZ(t *testing.T) {
	for _, n := range []int{0, 1, 255} {
		if name := tapName(strings.Repeat("f", 64), n); len(name) > 15 {
			t.Fatalf("tap name %q longer than 15", name)
		}
	}
}

func TestLastHost(t *testing.T) {
	for in, want := range map[string]string{"10.1.0.5/24": "10.1.0.254", "10.2.0.0/16": "10.2.255.254", "192.168.1.9/31": "192.168.1.9"} {
		if got := lastHost(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastHost(%s) = %s, want %s", in, got, want)
		}
	}
}

// pluginDir finds Debian's containernetworking-plugins.
func pluginDir(t *testing.T) string {
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			return d
		}
	}
	t.Skip("no CNI plugins installed (containernetworking-plugins)")
	return ""
}

// TestSetupAndTeardownWithRealPlugins runs the real bridge + host-local
// plugins (root only) on a private subnet and checks each step's result
// and that nothing is left.
func TestSetupAndTeardownWithRealPlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	bin := pluginDir(t)
	dir := t.TempDir()
	bridge := fmt.Sprintf("vmpodut%d", os.Getpid()%10000)
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vmpod-unit","plugins":[
	  {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
	   "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.250.77.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`,
		bridge, filepath.Join(dir, "ipam"))
	os.MkdirAll(filepath.Join(dir, "net.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "net.d", "10-unit.conflist"), []byte(conf), 0o644)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			netlink.LinkDel(l)
		}
	})
	m := NewManager(Config{ConfDir: filepath.Join(dir, "net.d"), BinDirs: []string{bin}, CacheDir: filepath.Join(dir, "cache")},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Ready(); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%064x", os.Getpid())
	att, err := m.Plan(id, PodInfo{Namespace: "ns", Name: "p", UID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { m.Teardown(ctx, att) })
	if err := m.Setup(ctx, att, nil); err != nil {
		t.Fatal(err)
	}
	if len(att.Interfaces) != 1 || len(att.Interfaces[0].Addresses) != 1 {
		t.Fatalf("interfaces: %+v", att.Interfaces)
	}
	ifc := att.Interfaces[0]
	if ifc.Addresses[0].Gateway.String() != "10.250.77.1" || !strings.HasPrefix(ifc.Addresses[0].Prefix.String(), "10.250.77.") || ifc.MTU == 0 {
		t.Fatalf("interface: %+v", ifc)
	}
	// The veth lost its address and MAC and sits in the bridge.
	out, err := exec.Command("ip", "-n", netnsName(id), "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || strings.Contains(string(out), "inet ") {
		t.Fatalf("eth0 still has an address (%v): %s", err, out)
	}
	out, _ = exec.Command("ip", "-n", netnsName(id), "-d", "link", "show", "dev", "eth0").CombinedOutput()
	if !strings.Contains(string(out), "master vmbr0") || !strings.Contains(string(out), "learning off") || strings.Contains(string(out), ifc.MAC) {
		t.Fatalf("eth0 is not a learning-off vmbr0 port with a new MAC:\n%s", out)
	}
	if u, err := m.Usage(att); err != nil || len(u) != 1 || u[0].Name != "eth0" || u[0].TxBytes == 0 {
		// The bridge plugin's gratuitous ARP went out through eth0.
		t.Fatalf("Usage: %+v, %v", u, err)
	}
	// A boot: taps in the host, then moved into the bridge.
	if err := m.PrepareVM(att); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(ifc.Tap); err != nil {
		t.Fatalf("tap %s not in the host netns after PrepareVM: %v", ifc.Tap, err)
	}
	if err := m.PlugVM(att, Guest{Hostname: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(ifc.Tap); err == nil {
		t.Fatalf("tap %s still in the host netns after PlugVM", ifc.Tap)
	}
	out, _ = exec.Command("ip", "-n", netnsName(id), "link", "show", "dev", ifc.Tap).CombinedOutput()
	if !strings.Contains(string(out), "master vmbr0") {
		t.Fatalf("tap not in vmbr0:\n%s", out)
	}
	// The anti-spoofing rules came with the plug and go with an unplug.
	if !hasGuard(att.NetNS) {
		t.Fatal("no anti-spoofing table in the netns after PlugVM")
	}
	if err := m.UnplugVM(att); err != nil {
		t.Fatal(err)
	}
	if hasGuard(att.NetNS) {
		t.Fatal("anti-spoofing table left after UnplugVM")
	}
	// A second boot replaces the taps.
	if err := m.PrepareVM(att); err != nil {
		t.Fatal(err)
	}
	if err := m.PlugVM(att, Guest{}); err != nil {
		t.Fatal(err)
	}
	if !hasGuard(att.NetNS) {
		t.Fatal("no anti-spoofing table in the netns after the second PlugVM")
	}
	if err := m.Teardown(ctx, att); err != nil {
		t.Fatal(err)
	}
	if left := LeakCheck(att); len(left) > 0 {
		t.Fatalf("left after teardown: %v", left)
	}
	// The bridge plugin finds its ipMasq rules from the veth's addresses at
	// DEL, which Teardown puts back for it.
	if out, err := exec.Command("iptables-save", "-t", "nat").Output(); err == nil && strings.Contains(string(out), id) {
		t.Fatalf("iptables rules naming the sandbox left after teardown:\n%s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "ipam", "vmpod-unit")); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "10.") {
				t.Fatalf("host-local reservation %s left", e.Name())
			}
		}
	}
	// Teardown again: idempotent.
	if err := m.Teardown(ctx, att); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}
