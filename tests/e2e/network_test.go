package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// podIP returns the IP `crictl inspectp` reports.
func (e *vmEnv) podIP(podID string) string {
	e.t.Helper()
	var v struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(e.mustCrictl("inspectp", "-o", "json", podID)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.Status.Network.IP
}

// httpGet fetches url from the host with a short timeout.
func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitHTTP polls url until the body contains want.
func waitHTTP(t *testing.T, url, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var body string
	var err error
	for time.Now().Before(deadline) {
		if body, err = httpGet(url); err == nil && strings.Contains(body, want) {
			return body
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("GET %s: no %q within %v (last: %v %q)", url, want, timeout, err, body)
	return ""
}

var guestIPRE = regexp.MustCompile(`stdout F vmpod-test-guest ip eth0=([0-9.]+)/(\d+)`)

// TestPodNetwork boots 10 VM pods on the real bridge CNI and checks that
// each guest holds the IP CNI chose and answers on it, that guests reach
// their gateway and each other, port-forward and hostPort mapping, DHCP
// renewals across a vmpod restart, and that removing the pods leaves
// nothing behind.
func TestPodNetwork(t *testing.T) {
	e := newVMEnv(t)
	const n = 10
	hostPort := freePort(t)
	type vm struct {
		name, podID, ctrID, ip string
		f                      podFiles
	}
	vms := make([]*vm, n)
	for i := range vms {
		v := &vm{name: fmt.Sprintf("net%d", i)}
		var extra map[string]any
		if i == 0 {
			extra = map[string]any{"port_mappings": []map[string]any{{"protocol": 0, "container_port": 8080, "host_port": hostPort, "host_ip": "127.0.0.1"}}}
		}
		v.f = e.podConfigsWith(v.name, 0, map[string]string{"vmpod.dev/memory": "192Mi"}, extra)
		v.podID, v.ctrID = e.startVM(v.f)
		v.ip = e.podIP(v.podID)
		if !strings.HasPrefix(v.ip, strings.TrimSuffix(e2eSubnet, "0/24")) {
			t.Fatalf("%s: crictl inspectp shows IP %q, want one from %s", v.name, v.ip, e2eSubnet)
		}
		vms[i] = v
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// Who holds which MAC and IP, and what the DHCP servers did.
		for _, v := range vms {
			if v == nil {
				continue
			}
			out, _, _ := e.crictl("inspectp", "-o", "json", v.podID)
			if i := strings.Index(out, `"interfaces"`); i >= 0 {
				out = out[i:min(len(out), i+400)]
			}
			t.Logf("%s %s %s: %s", v.name, v.podID[:12], v.ip, out)
		}
		for _, l := range strings.Split(e.Log(), "\n") {
			if strings.Contains(l, "DHCP") && !strings.Contains(l, "level=DEBUG") {
				t.Log(l)
			}
		}
		out, _ := exec.Command("ip", "neigh", "show", "dev", e2eBridge).CombinedOutput()
		t.Logf("host neighbours on %s:\n%s", e2eBridge, out)
		out, _ = exec.Command("virsh", "list", "--all").CombinedOutput()
		t.Logf("domains:\n%s", out)
	})
	seen := map[string]string{}
	for _, v := range vms {
		if other, dup := seen[v.ip]; dup {
			t.Fatalf("%s and %s both got %s", other, v.name, v.ip)
		}
		seen[v.ip] = v.name
	}
	if got := len(ipReservations(t)); got != n {
		t.Fatalf("host-local holds %d reservations, want %d", got, n)
	}
	// Every guest got its pod IP (by DHCP from vmpod) and answers on it.
	for _, v := range vms {
		m := waitLog(t, v.f.logPath, guestIPRE, 3*bootTimeout)
		if m[1] != v.ip || m[2] != "24" {
			t.Fatalf("%s: the guest configured %s/%s, CNI chose %s/24", v.name, m[1], m[2], v.ip)
		}
		body := waitHTTP(t, "http://"+v.ip+":8080/cgi-bin/info", "hostname="+v.name, 60*time.Second)
		if !strings.Contains(body, "ip eth0="+v.ip+"/24") {
			t.Fatalf("%s: info page: %s", v.name, body)
		}
	}
	a, b := vms[0], vms[1]
	waitLog(t, a.f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 30*time.Second)
	// The guest reaches its gateway (the CNI bridge on the host) ...
	if out := e.mustCrictl("exec", "-s", a.ctrID, "ping", "-c", "1", "-W", "5", e2eGateway); !strings.Contains(out, "1 packets received") {
		t.Fatalf("ping gateway from %s: %s", a.name, out)
	}
	// ... and another pod.
	if out := e.mustCrictl("exec", "-s", a.ctrID, "wget", "-q", "-O", "-", "http://"+b.ip+":8080/cgi-bin/info"); !strings.Contains(out, "hostname="+b.name) {
		t.Fatalf("%s -> %s: %s", a.name, b.name, out)
	}
	// The hostPort mapping (portmap plugin) reaches the guest.
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); !strings.Contains(string(out), a.podID) {
		t.Fatalf("no portmap rule names pod %s:\n%s", a.podID, out)
	}
	// crictl port-forward reaches port 8080 of the guest.
	local := freePort(t)
	pf := exec.Command("crictl", "--config", e.crictlConfig, "port-forward", a.podID, fmt.Sprintf("%d:8080", local))
	pfOut, _ := pf.StdoutPipe()
	pf.Stderr = pf.Stdout
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	sc := bufio.NewScanner(pfOut)
	for sc.Scan() && !strings.Contains(sc.Text(), "Forwarding from") {
	}
	go io.Copy(io.Discard, pfOut)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/cgi-bin/info", local), "hostname="+a.name, 30*time.Second)
	// A closed port: the client gets an error naming the guest address.
	closed := freePort(t)
	pf2 := exec.Command("crictl", "--config", e.crictlConfig, "port-forward", a.podID, fmt.Sprintf("%d:8081", closed))
	var pf2Out strings.Builder
	pf2.Stdout, pf2.Stderr = &pf2Out, &pf2Out
	if err := pf2.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf2.Process.Kill(); pf2.Wait() }()
	time.Sleep(2 * time.Second)
	if _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", closed)); err == nil {
		t.Fatal("GET through a port-forward to a closed guest port succeeded")
	}
	if !strings.Contains(e.Log(), "connect to the guest at "+a.ip+":8081") {
		t.Fatalf("vmpod did not report the refused port-forward; crictl said: %s", pf2Out.String())
	}

	// The DHCP servers are per VM, in the pod netns: the daemon holds
	// sockets in other network namespaces while VMs run.
	if got := foreignNetnsSockets(t, e.Pid()); got < n {
		t.Fatalf("vmpod holds %d sockets in pod network namespaces, want at least %d (one DHCP server per VM)", got, n)
	}
	// A vmpod killed and restarted answers a renewing guest again.
	e.Kill()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	leases := func() int {
		out, _, _ := e.crictl("exec", "-s", a.ctrID, "cat", "/var/log/udhcpc.eth0.log")
		return strings.Count(out, "lease of "+a.ip+" obtained")
	}
	before := leases()
	e.mustCrictl("exec", "-s", a.ctrID, "killall", "-USR1", "udhcpc")
	deadline := time.Now().Add(20 * time.Second)
	for leases() <= before {
		if time.Now().After(deadline) {
			out, _, _ := e.crictl("exec", "-s", a.ctrID, "cat", "/var/log/udhcpc.eth0.log")
			t.Fatalf("after the restart the guest's renewal got no answer:\n%s", out)
		}
		time.Sleep(time.Second)
	}

	var ids []string
	for _, v := range vms {
		ids = append(ids, v.podID)
		e.mustCrictl("stopp", v.podID)
		e.mustCrictl("rmp", v.podID)
	}
	if left := networkLeftovers(t, ids...); len(left) > 0 {
		t.Fatalf("left after removing the pods: %v", left)
	}
	if got := foreignNetnsSockets(t, e.Pid()); got != 0 {
		t.Fatalf("vmpod still holds %d sockets in other network namespaces (DHCP servers)", got)
	}
}

// TestPodNetworkSurvivesKillMidRunp kills vmpod while a CNI ADD is in
// flight (a wrapper runs the real bridge plugin, then waits before
// answering); the restarted vmpod must undo the half-made sandbox.
func TestPodNetworkSurvivesKillMidRunp(t *testing.T) {
	bin := t.TempDir()
	wrapper := "#!/bin/sh\n# The real bridge plugin, then a pause before its answer reaches vmpod.\nout=$(/usr/lib/cni/bridge)\nrc=$?\n[ \"$CNI_COMMAND\" = ADD ] && sleep 5\nprintf '%s' \"$out\"\nexit $rc\n"
	if err := os.WriteFile(filepath.Join(bin, "slowbridge"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "10-slow.conflist"), []byte(e2eConfList("slowbridge")), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(conf, 0o755)
	env := []string{"VMPOD_CNI_CONF_DIR=" + conf, "VMPOD_CNI_BIN_DIRS=" + bin + ":/usr/lib/cni"}
	d := startDaemon(t, daemonOpts{extraEnv: env})
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	f := e.podConfigs("halfmade", 0, nil)
	reservedBefore := len(ipReservations(t))
	netnsBefore, _ := filepath.Glob("/run/netns/vmpod-*")
	runp := exec.Command("crictl", "--config", d.crictlConfig, "runp", f.pod)
	if err := runp.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the real plugin reserved the IP (ADD is under way).
	deadline := time.Now().Add(30 * time.Second)
	for len(ipReservations(t)) == reservedBefore {
		if time.Now().After(deadline) {
			t.Fatalf("no IP reserved within 30 s\n%s", d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.Kill()
	runp.Wait()
	netnsAfter, _ := filepath.Glob("/run/netns/vmpod-*")
	var id string
	for _, n := range netnsAfter {
		if !slices.Contains(netnsBefore, n) {
			id = strings.TrimPrefix(filepath.Base(n), "vmpod-")
		}
	}
	if id == "" {
		t.Fatal("no new pod netns existed at the kill: the test did not kill mid-runp")
	}
	time.Sleep(6 * time.Second) // let the orphaned plugin finish
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if out := d.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods after recovery: %s", out)
	}
	if left := networkLeftovers(t, id); len(left) > 0 {
		t.Fatalf("left after kill -9 mid-runp and restart: %v\n%s", left, d.Log())
	}
	if !strings.Contains(d.Log(), "cleaning up a pod sandbox vmpod stopped while creating") {
		t.Fatalf("recovery did not report the cleanup:\n%s", d.Log())
	}
}

// TestPodNetworkErrors: no CNI config makes NetworkReady false and runp
// fail clearly; a CNI ADD failure leaves nothing behind.
func TestPodNetworkErrors(t *testing.T) {
	empty := t.TempDir()
	os.Chmod(empty, 0o755)
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_CNI_CONF_DIR=" + empty}})
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	info := d.mustCrictl("info")
	var st struct {
		Status struct {
			Conditions []struct {
				Type, Reason, Message string
				Status                bool
			}
		}
	}
	if err := json.Unmarshal([]byte(info), &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range st.Status.Conditions {
		if c.Type == "NetworkReady" {
			found = true
			if c.Status || c.Reason != "NetworkPluginNotReady" || !strings.HasPrefix(c.Message, "no CNI network config in "+empty) {
				t.Fatalf("NetworkReady without CNI config: %+v", c)
			}
		}
	}
	if !found {
		t.Fatalf("no NetworkReady condition:\n%s", info)
	}
	f := e.podConfigs("nonet", 0, nil)
	if errOut := d.failCrictl("runp", f.pod); !strings.Contains(errOut, "no CNI network config in "+empty) {
		t.Fatalf("runp without CNI config: %s", errOut)
	}
	d.mustStop()

	// A config whose IPAM range is broken: CNI ADD fails in the plugin.
	broken := t.TempDir()
	os.Chmod(broken, 0o755)
	bad := strings.Replace(e2eConfList("bridge"), e2eSubnet, "10.251.300.0/24", 1)
	if bad == e2eConfList("bridge") {
		t.Fatal("the broken config is not broken")
	}
	if err := os.WriteFile(filepath.Join(broken, "10-broken.conflist"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_CNI_CONF_DIR=" + broken}})
	e2 := &vmEnv{daemon: d2, logDir: filepath.Join(d2.dir, "pods")}
	before, _ := filepath.Glob("/run/netns/vmpod-*")
	errOut := d2.failCrictl("runp", e2.podConfigs("badnet", 0, nil).pod)
	if !strings.Contains(errOut, `CNI ADD of network`) || !strings.Contains(errOut, "invalid CIDR address: 10.251.300.0/24") {
		t.Fatalf("runp with a broken CNI config: %s", errOut)
	}
	after, _ := filepath.Glob("/run/netns/vmpod-*")
	if len(after) != len(before) {
		t.Fatalf("netns left after a failed runp: %v", after)
	}
	if out := d2.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods after a failed runp: %s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); regexp.MustCompile(`vmt[0-9a-f]{10}`).Match(out) {
		t.Fatalf("taps left: %s", out)
	}
}
