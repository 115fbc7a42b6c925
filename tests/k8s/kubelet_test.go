// Package k8se2e runs vmpod under a real kubelet and API server: etcd,
// kube-apiserver, containerd (the node's primary runtime), vmpod and the
// CRI router, and a kubelet whose runtime endpoint is the router, all on
// this machine. It checks what a user does with a VM pod through kubectl
// (logs, attach, port-forward, a readiness probe) beside an ordinary
// container pod. It needs root, libvirtd, the binaries hack/k8s-e2e.sh
// builds, and runs only when VMPOD_K8S_E2E=1; hack/k8s-e2e.sh sets it up.
package k8se2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmpod/vmpod/internal/testdaemon"
)

var (
	k8sBin   string // VMPOD_K8S_BIN: kubelet, kube-apiserver, kubectl
	vmpodBin string
	guest    string // VMPOD_TEST_GUEST
	repo     string // the repository's root
)

func TestMain(m *testing.M) {
	if os.Getenv("VMPOD_K8S_E2E") != "1" {
		fmt.Println("k8s e2e: skipped (set VMPOD_K8S_E2E=1; hack/k8s-e2e.sh does, after building what the test needs)")
		os.Exit(0)
	}
	k8sBin, guest = os.Getenv("VMPOD_K8S_BIN"), os.Getenv("VMPOD_TEST_GUEST")
	for _, f := range []string{filepath.Join(k8sBin, "kubelet"), filepath.Join(k8sBin, "kube-apiserver"), filepath.Join(k8sBin, "kubectl"), guest} {
		if _, err := os.Stat(f); err != nil {
			fmt.Printf("k8s e2e: %v (VMPOD_K8S_BIN and VMPOD_TEST_GUEST must name the built binaries and the test guest)\n", err)
			os.Exit(1)
		}
	}
	wd, _ := os.Getwd()
	repo = filepath.Join(wd, "..", "..")
	dir, err := os.MkdirTemp("", "vmpod-k8s-e2e-bin-")
	if err != nil {
		panic(err)
	}
	if vmpodBin, err = testdaemon.Build(dir); err != nil {
		fmt.Println("k8s e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// step logs how long each part took, in one greppable format.
type step struct {
	t     *testing.T
	name  string
	start time.Time
}

func begin(t *testing.T, name string) *step {
	t.Logf("---- %s", name)
	return &step{t: t, name: name, start: time.Now()}
}

func (s *step) done() {
	s.t.Logf("ok   %-55s %6.1fs", s.name, time.Since(s.start).Seconds())
}

const (
	vmPod     = "vm-probe"  // examples/vm-readiness-probe.yaml
	ctrPod    = "ctr-hello" // an ordinary container pod
	vmImage   = "vms/vmpod-test-guest"
	bootLimit = 4 * time.Minute // pull + TCG boot on a loaded 2-core machine
)

func TestKubelet(t *testing.T) {
	total := time.Now()
	c := newCluster(t, k8sBin, vmpodBin, guest)
	c.noteHostDirs()
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"kubelet", "router", "vmpod", "containerd"} {
				t.Logf("%s log (tail):\n%s", n, tail(c.log(n), 60))
			}
		}
		s := begin(t, "teardown")
		c.teardown()
		s.done()
	})

	s := begin(t, "images: pause and hello from static Go binaries")
	pauseTar, err := buildImage(c.dir, filepath.Join(repo, "tests/k8s/images/pause"), pauseImage)
	if err != nil {
		t.Fatal(err)
	}
	helloTar, err := buildImage(c.dir, filepath.Join(repo, "tests/k8s/images/hello"), helloImage)
	if err != nil {
		t.Fatal(err)
	}
	s.done()

	s = begin(t, "start etcd, kube-apiserver")
	c.setupNetwork()
	c.startAPIServer(c.startEtcd())
	s.done()

	s = begin(t, "start containerd, import images")
	c.startContainerd()
	for _, tar := range []string{pauseTar, helloTar} {
		if out, err := c.ctr("images", "import", "--snapshotter", "overlayfs", tar); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	s.done()

	s = begin(t, "start vmpod and the router")
	// The test guest, served over HTTP on 127.0.0.1 and named by an image
	// translation rule that both vmpod and the router read.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, guest)
	}))
	t.Cleanup(srv.Close)
	c.startVMPod()
	c.write(filepath.Join(c.translations, "e2e.toml"), fmt.Sprintf("[[translations]]\nname = %q\nurl = \"%s/vmpod-test-guest.qcow2\"\n", vmImage, srv.URL))
	s.done()

	s = begin(t, "start the kubelet; node Ready")
	c.startKubelet()
	s.done()

	s = begin(t, "apply deploy/30-runtimeclass.yaml")
	c.mustKubectl("apply", "-f", filepath.Join(repo, "deploy/30-runtimeclass.yaml"))
	s.done()

	s = begin(t, "apply the VM pod (examples/vm-readiness-probe.yaml) and a container pod")
	c.mustKubectl("apply", "-f", c.vmPodManifest())
	c.mustKubectl("apply", "-f", c.ctrPodManifest())
	s.done()

	s = begin(t, "container pod Running and Ready (containerd)")
	cp := c.waitPod(ctrPod, 2*time.Minute, podReady)
	if !strings.HasPrefix(cp.Status.PodIP, "10.252.") {
		t.Fatalf("%s: pod IP %q, want one from %s", ctrPod, cp.Status.PodIP, subnet)
	}
	if out := c.mustKubectl("logs", ctrPod); !strings.Contains(out, "hello: listening on :8080") {
		t.Fatalf("kubectl logs %s: %q", ctrPod, out)
	}
	if body, err := httpGet("http://" + cp.Status.PodIP + ":8080/"); err != nil || !strings.Contains(body, "hello from "+ctrPod) {
		t.Fatalf("GET the container pod: %v %q", err, body)
	}
	s.done()

	s = begin(t, "VM pod Running with its pod IP")
	vp := c.waitPod(vmPod, bootLimit, podRunning)
	vmIP := vp.Status.PodIP
	if !strings.HasPrefix(vmIP, "10.252.") || vmIP == cp.Status.PodIP {
		t.Fatalf("%s: pod IP %q (container pod %s), want another one from %s", vmPod, vmIP, cp.Status.PodIP, subnet)
	}
	vmSandbox, vmCtr := c.vmpodIDs(t)
	t.Logf("%s: pod IP %s, vmpod sandbox %s, container %s; %s: pod IP %s", vmPod, vmIP, vmSandbox, vmCtr, ctrPod, cp.Status.PodIP)
	s.done()

	s = begin(t, "kubectl logs shows the guest's ready line and pod IP")
	c.waitKubectlLogs(vmPod, "vmpod-test-guest ready", bootLimit)
	c.waitKubectlLogs(vmPod, "vmpod-test-guest ip eth0="+vmIP+"/16", time.Minute)
	s.done()

	s = begin(t, "HTTP readiness probe against the guest: pod Ready")
	c.waitPod(vmPod, 2*time.Minute, podReady)
	s.done()

	s = begin(t, "kubectl attach -it reaches the serial console")
	c.attachEcho(vmPod)
	s.done()

	s = begin(t, "kubectl port-forward reaches the guest's port 8080")
	c.portForward(vmPod, "vmpod-test-guest")
	s.done()

	s = begin(t, "the router shows both runtimes' pods")
	if out, err := c.crictl(c.routerSock, "pods", "--state", "ready", "-o", "json"); err != nil || !strings.Contains(out, `"`+vmPod+`"`) || !strings.Contains(out, `"`+ctrPod+`"`) {
		t.Fatalf("crictl pods through the router: %v\n%s", err, out)
	}
	ctrSandbox, ctrNetns := c.containerdSandbox(t)
	s.done()

	s = begin(t, "delete both pods; nothing left behind")
	c.mustKubectl("delete", "pod", vmPod, ctrPod, "--wait=true", "--timeout=3m")
	// The kubelet removes the stopped sandboxes in its garbage collection,
	// which runs once a minute.
	c.waitFor("both runtimes without pods", "kubelet", 4*time.Minute, func() error {
		for _, sock := range []string{c.vmpodSock, c.containerdSock} {
			if out, err := c.crictl(sock, "pods", "-q"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("%s: pods %q %v", sock, strings.TrimSpace(out), err)
			}
		}
		return nil
	})
	if left := c.leftovers(vmSandbox, vmCtr, ctrSandbox, ctrNetns); len(left) > 0 {
		t.Fatalf("left after deleting the pods: %v", left)
	}
	s.done()

	c.checkJobs() // jobs_test.go
	t.Logf("total %.1fs", time.Since(total).Seconds())
}

var fortyTwo = regexp.MustCompile(`(^|[^0-9*(])42\s*$`)

// attachEcho types a command on the VM's serial console through
// `kubectl attach -it` and waits for its answer. kubectl gets a terminal
// from script(1), as a person's kubectl would: without one it drops -t and
// asks for a separate stderr stream, which a tty container does not have.
func (c *cluster) attachEcho(pod string) {
	c.t.Helper()
	kubectl := strings.Join([]string{filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig, "attach", "-i", "-t", pod, "-c", "vm"}, " ")
	cmd := exec.Command("script", "-q", "-e", "-c", kubectl, "/dev/null")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	out := c.startMerged(cmd)
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	var seen strings.Builder
	deadline := time.After(90 * time.Second)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	// The terminal is raw: Enter is a carriage return.
	send := func() { io.WriteString(stdin, "echo $((6*7))\r") }
	send()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				c.t.Fatalf("kubectl attach ended before the answer; output:\n%s", seen.String())
			}
			seen.WriteString(l + "\n")
			if fortyTwo.MatchString(l) {
				c.t.Logf("kubectl attach -it: the console answered %q", strings.TrimSpace(l))
				return
			}
		case <-tick.C:
			// The attach stream may not be connected yet when the first
			// line is typed; typing it again is harmless.
			send()
		case <-deadline:
			c.t.Fatalf("kubectl attach: no 42 within 90s; output:\n%s", seen.String())
		}
	}
}

// portForward runs kubectl port-forward to port 8080 of the pod and GETs /.
func (c *cluster) portForward(pod, want string) {
	c.t.Helper()
	local := freePort(c.t)
	cmd := c.kubectlCmd("port-forward", "--address", "127.0.0.1", "pod/"+pod, fmt.Sprintf("%d:8080", local))
	out := c.startMerged(cmd)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var seen strings.Builder
	for sc.Scan() && !strings.Contains(sc.Text(), "Forwarding from") {
		seen.WriteString(sc.Text() + "\n")
	}
	go io.Copy(io.Discard, out)
	var body string
	c.waitFor("GET through kubectl port-forward", "vmpod", time.Minute, func() error {
		var err error
		body, err = httpGet(fmt.Sprintf("http://127.0.0.1:%d/", local))
		if err != nil {
			return fmt.Errorf("%v (kubectl: %s)", err, seen.String())
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})
}

func httpGet(url string) (string, error) {
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// vmpodIDs returns the VM pod's sandbox and container IDs in vmpod.
func (c *cluster) vmpodIDs(t *testing.T) (sandbox, ctr string) {
	t.Helper()
	out, err := c.crictl(c.vmpodSock, "pods", "--name", vmPod, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("vmpod's pods named %s: %v %q", vmPod, err, out)
	}
	sandbox = strings.TrimSpace(out)
	out, err = c.crictl(c.vmpodSock, "ps", "-a", "--pod", sandbox, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("vmpod's containers of %s: %v %q", sandbox, err, out)
	}
	return sandbox, strings.TrimSpace(out)
}

// containerdSandbox returns the container pod's sandbox ID in containerd
// and the path of its network namespace.
func (c *cluster) containerdSandbox(t *testing.T) (id, netns string) {
	t.Helper()
	out, err := c.crictl(c.containerdSock, "pods", "--name", ctrPod, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("containerd's pods named %s: %v %q", ctrPod, err, out)
	}
	id = strings.TrimSpace(out)
	out, err = c.crictl(c.containerdSock, "inspectp", "-o", "json", id)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	for _, ns := range v.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns == "" {
		t.Fatalf("containerd's sandbox %s has no network namespace path:\n%s", id, out)
	}
	return id, netns
}

// leftovers lists what of the two pods is still on the host.
func (c *cluster) leftovers(vmSandbox, vmCtr, ctrSandbox, ctrNetns string) []string {
	var left []string
	if out, err := run(30*time.Second, "virsh", "-c", "qemu:///system", "dominfo", "vmpod-"+vmCtr); err == nil {
		left = append(left, "libvirt domain vmpod-"+vmCtr+": "+out)
	}
	for _, p := range []string{"/run/netns/vmpod-" + vmSandbox, ctrNetns} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "netns "+p)
		}
	}
	if out, _ := c.ctr("tasks", "ls", "-q"); strings.TrimSpace(out) != "" {
		left = append(left, "containerd tasks: "+strings.TrimSpace(out))
	}
	if out, _ := c.ctr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
		left = append(left, "containerd containers: "+strings.TrimSpace(out))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "ports on "+bridge+": "+strings.TrimSpace(string(out)))
	}
	if ents, _ := os.ReadDir(filepath.Join(c.ipamDir, netName)); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "10.") {
				left = append(left, "host-local reservation "+e.Name())
			}
		}
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		for _, id := range []string{vmSandbox, ctrSandbox} {
			if strings.Contains(string(out), id) {
				left = append(left, "iptables rules naming "+id)
			}
		}
	}
	if pids := c.shimPIDs(); len(pids) > 0 {
		left = append(left, fmt.Sprintf("containerd shims %v", pids))
	}
	return left
}
