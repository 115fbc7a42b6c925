// Package k8se2e runs vmpod under a real kubelet and API server, installed
// as docs/install.md says: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and containerd (the node's primary runtime) on this
// machine; the vmpod image that hack/build-image.sh built, imported into
// containerd; the DaemonSet (libvirt and vmpod containers) from
// deploy/overlays/example; the CRI router as a host service and the
// kubelet pointed at it. It checks what a user does with a VM pod through
// kubectl (logs, attach, exec, port-forward, a readiness probe) beside an
// ordinary container pod; the VM in its pod's cgroup and in the kubelet's
// /stats/summary; that the VM survives the DaemonSet's pod being
// deleted and upgraded to a second image; a checkpoint through the
// kubelet's checkpoint API, pushed to a registry as a checkpoint image and
// restored into a new pod; and that the uninstall leaves the node clean. It needs root, the binaries and images hack/k8s-e2e.sh
// builds, and runs only when VMPOD_K8S_E2E=1; hack/k8s-e2e.sh sets it up.
package k8se2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var (
	k8sBin  string // VMPOD_K8S_BIN: kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
	guest   string // VMPOD_TEST_GUEST
	images  [2]image
	repo    string // the repository's root
	binList = []string{"kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}
)

func TestMain(m *testing.M) {
	if os.Getenv("VMPOD_K8S_E2E") != "1" {
		fmt.Println("k8s e2e: skipped (set VMPOD_K8S_E2E=1; hack/k8s-e2e.sh does, after building what the test needs)")
		os.Exit(0)
	}
	k8sBin, guest = os.Getenv("VMPOD_K8S_BIN"), os.Getenv("VMPOD_TEST_GUEST")
	files := []string{guest}
	for _, b := range binList {
		files = append(files, filepath.Join(k8sBin, b))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			fmt.Printf("k8s e2e: %v (VMPOD_K8S_BIN and VMPOD_TEST_GUEST must name the built binaries and the test guest)\n", err)
			os.Exit(1)
		}
	}
	for i, env := range []string{"VMPOD_K8S_IMAGE", "VMPOD_K8S_UPGRADE_IMAGE"} {
		img, err := readImage(os.Getenv(env))
		if err != nil {
			fmt.Printf("k8s e2e: %s: %v (two image archives from hack/build-image.sh, with different tags)\n", env, err)
			os.Exit(1)
		}
		images[i] = img
	}
	if images[0].tag == images[1].tag {
		fmt.Printf("k8s e2e: the two images have the same tag %s\n", images[0].tag)
		os.Exit(1)
	}
	wd, _ := os.Getwd()
	repo = filepath.Join(wd, "..", "..")
	os.Exit(m.Run())
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
	lockRun(t)
	daemons := hostDaemons() // the host's libvirtd and virtlogd; its libvirtd must still serve at the end
	c := newCluster(t, k8sBin, guest)
	c.noteHostDirs()
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"kubelet", "router", "vmpod", "libvirt", "containerd", "kube-controller-manager"} {
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

	s = begin(t, "start etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
	c.setupNetwork()
	c.startAPIServer(c.startEtcd())
	c.startControllers()
	s.done()

	s = begin(t, "start containerd, import images; the kubelet on containerd")
	c.startContainerd()
	for _, tar := range []string{pauseTar, helloTar} {
		if out, err := c.ctr("images", "import", "--snapshotter", "overlayfs", tar); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	c.setupRoot()
	c.startKubelet(c.containerdSock)
	s.done()

	// The test guest, served over HTTP on 127.0.0.1 and named by an image
	// translation rule that both vmpod and the router read.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, guest)
	}))
	t.Cleanup(srv.Close)
	guestURL := srv.URL + "/vmpod-test-guest.qcow2"

	s = begin(t, "a registry on 127.0.0.1 for the checkpoint image")
	c.startRegistry()
	s.done()

	s = begin(t, "install 1-3: import "+images[0].name+", label the node, kubectl apply -k")
	c.importImage(images[0])
	c.labelNode(true)
	c.writeOverlay(images[0].tag, guestURL)
	c.applyDeploy()
	ds := c.dsPod("")
	if v := c.vmpodVersion(); v != images[0].tag {
		t.Fatalf("the DaemonSet's vmpod reports version %q, want %q", v, images[0].tag)
	}
	c.requireDSProcesses(daemons)
	s.done()

	s = begin(t, "install 4-5: the router from the image; the kubelet on the router")
	c.installRouter(images[0])
	c.write(filepath.Join(c.translations, "e2e.toml"), guestRule(guestURL))
	c.startRouter()
	c.restartKubelet(c.routerSock)
	if p := c.dsPod(""); p.UID != ds.UID || restarts(p) != 0 {
		t.Fatalf("the DaemonSet's pod %s (uid %s, %d restarts) after the kubelet moved to the router, want %s untouched", p.Name, p.UID, restarts(p), ds.UID)
	}
	s.done()

	s = begin(t, "apply the VM pod (examples/vm-readiness-probe.yaml) and a container pod")
	hostPort := freePort(t)
	c.mustKubectl("apply", "-f", c.vmPodManifest(hostPort))
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
	vmSandbox, vmCtr := c.vmpodIDs(t, vmPod)
	t.Logf("%s: pod IP %s, vmpod sandbox %s, container %s; %s: pod IP %s", vmPod, vmIP, vmSandbox, vmCtr, ctrPod, cp.Status.PodIP)
	s.done()

	s = begin(t, "kubectl logs shows the guest's ready line and pod IP")
	c.waitKubectlLogs(vmPod, "vmpod-test-guest ready", bootLimit)
	c.waitKubectlLogs(vmPod, "vmpod-test-guest ip eth0="+vmIP+"/16", time.Minute)
	s.done()

	s = begin(t, "HTTP readiness probe against the guest: pod Ready; its hostPort; its footprint on the node")
	c.waitPod(vmPod, 2*time.Minute, podReady)
	c.getHostPort(hostPort, "vmpod-test-guest")
	qemu, err := c.qemuPID(vmCtr)
	if err != nil {
		t.Fatal(err)
	}
	vm := vmPodRef{sandbox: vmSandbox, ctr: vmCtr, ip: vmIP, qemu: qemu}
	c.requireFootprint(vm, "")
	s.done()

	s = begin(t, "VM in its pod's cgroup with its limits; /stats/summary shows it")
	c.checkVMResources(t, vmCtr)
	s.done()

	s = begin(t, "kubectl attach -it reaches the serial console")
	c.attachEcho(vmPod)
	s.done()

	s = begin(t, "kubectl port-forward reaches the guest's port 8080")
	c.portForward(vmPod, "vmpod-test-guest")
	s.done()

	s = begin(t, "restart: delete the DaemonSet's pod; the VM runs on")
	st := c.vmSnapshot(vmPod, vmCtr, ds)
	c.mustKubectl("-n", dsNamespace, "delete", "pod", ds.Name, "--wait=true", "--timeout=3m")
	ds = c.dsPod(ds.Name)
	c.checkSurvived(vmPod, vmCtr, st, ds, "the restart")
	c.waitPod(vmPod, time.Minute, podReady)
	s.done()

	s = begin(t, "upgrade: import "+images[1].name+", kubectl apply -k with its tag; the VM runs on")
	c.importImage(images[1])
	c.writeOverlay(images[1].tag, guestURL)
	c.applyDeploy()
	ds = c.dsPod(ds.Name)
	for _, ctr := range ds.Spec.Containers {
		if want := "vmpod:" + images[1].tag; ctr.Image != want {
			t.Fatalf("after the upgrade, container %s runs %s, want %s", ctr.Name, ctr.Image, want)
		}
	}
	if v := c.vmpodVersion(); v != images[1].tag {
		t.Fatalf("after the upgrade, vmpod reports version %q, want %q", v, images[1].tag)
	}
	c.checkSurvived(vmPod, vmCtr, st, ds, "the upgrade")
	c.waitPod(vmPod, time.Minute, podReady)
	c.attachEcho(vmPod)
	s.done()

	// checkpoint_test.go
	s = begin(t, "checkpoint the VM pod with the kubelet's API; the VM runs on")
	c.startCounter(vmPod)
	ck := c.kubeletCheckpoint(vmPod, "vm")
	c.waitFor("kubectl logs "+vmPod+": the counter goes on", "vmpod", time.Minute, func() error {
		if n := lastCounter(c.mustKubectl("logs", vmPod)); n < ck.after+3 {
			return fmt.Errorf("counter at %d, want %d", n, ck.after+3)
		}
		return nil
	})
	vp = c.waitPod(vmPod, time.Minute, podReady)
	if restarts(vp) != 0 || vp.Status.PodIP != vmIP {
		t.Fatalf("%s after the checkpoint: %d restarts, pod IP %s (was %s)", vmPod, restarts(vp), vp.Status.PodIP, vmIP)
	}
	// The checkpoint saved the VM and restored it in place: a new QEMU.
	if vm.qemu, err = c.qemuPID(vmCtr); err != nil {
		t.Fatal(err)
	}
	s.done()

	s = begin(t, "push the archive to the registry as a checkpoint image")
	ckRef := c.pushCheckpoint(ck.archive, "vms/"+vmPod+"-checkpoint:1")
	s.done()

	s = begin(t, "restore: a new pod in the same namespace from the checkpoint image")
	c.mustKubectl("apply", "-f", c.restoredPodManifest(ckRef, vp.Spec.Containers[0].Resources.Limits))
	rp := c.checkRestored(ck, vmIP)
	rSandbox, rCtr := c.vmpodIDs(t, restoredPod)
	rQEMU, err := c.qemuPID(rCtr)
	if err != nil {
		t.Fatal(err)
	}
	restored := vmPodRef{sandbox: rSandbox, ctr: rCtr, ip: rp.Status.PodIP, qemu: rQEMU}
	c.requireFootprint(restored, "iptables") // no hostPort: no portmap rules
	if vp := c.waitPod(vmPod, time.Minute, podReady); restarts(vp) != 0 {
		t.Fatalf("%s: %d restarts after the restore of its checkpoint", vmPod, restarts(vp))
	}
	s.done()

	s = begin(t, "the router shows both runtimes' pods")
	if out, err := c.crictl(c.routerSock, "pods", "--state", "ready", "-o", "json"); err != nil || !strings.Contains(out, `"`+vmPod+`"`) || !strings.Contains(out, `"`+ctrPod+`"`) {
		t.Fatalf("crictl pods through the router: %v\n%s", err, out)
	}
	ctrSandbox, ctrNetns := c.containerdSandbox(t)
	s.done()

	c.checkJobs() // jobs_test.go

	s = begin(t, "delete the pods (the upgraded vmpod stops the VMs); nothing left behind")
	c.mustKubectl("delete", "pod", vmPod, restoredPod, ctrPod, "--wait=true", "--timeout=3m")
	// The kubelet removes the stopped sandboxes in its garbage collection,
	// which runs once a minute.
	c.waitFor("both runtimes without pods", "kubelet", 4*time.Minute, func() error {
		out, err := c.crictl(c.vmpodSock, "pods", "-q")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("vmpod: pods %q %v", strings.TrimSpace(out), err)
		}
		out, err = c.crictl(c.containerdSock, "pods", "--namespace", "default", "-q")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("containerd: pods in default %q %v", strings.TrimSpace(out), err)
		}
		return nil
	})
	if left := c.leftovers([]vmPodRef{vm, restored}, ctrSandbox, ctrNetns); len(left) > 0 {
		t.Fatalf("left after deleting the pods: %v", left)
	}
	s.done()

	s = begin(t, "uninstall (docs/install.md): the node is clean")
	c.uninstall(images[:])
	if left := c.nodeLeftovers([]vmPodRef{vm, restored}, daemons); len(left) > 0 {
		t.Fatalf("left after the uninstall: %v", left)
	}
	c.hostLibvirtServes(daemons)
	s.done()
	t.Logf("total %.1fs", time.Since(total).Seconds())
}

// hostLibvirtServes checks, when the host ran a libvirtd at the start
// (daemons), that it still serves on the host's own socket: the DaemonSet
// and the uninstall, which work under the private root, left the host's
// /run/libvirt alone. Its pid is not compared: other tests on this machine
// restart the host's libvirtd (tests/e2e's libvirt reliability tests do).
func (c *cluster) hostLibvirtServes(daemons []int) {
	c.t.Helper()
	ran := false
	for _, pid := range daemons {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "libvirtd" {
			ran = true
		} else if err := syscall.Kill(pid, 0); err != nil {
			c.t.Logf("the host's virtlogd %d is gone (restarted by another test?)", pid)
		}
	}
	if !ran {
		return
	}
	c.waitFor("the host's libvirtd on /run/libvirt/libvirt-sock", "kubelet", time.Minute, func() error {
		_, err := run(30*time.Second, "virsh", "-c", "qemu:///system", "version")
		return err
	})
	if after := hostDaemons(); !slices.Equal(after, daemons) {
		c.t.Logf("the host's libvirtd and virtlogd: %v at the start, %v now (restarted by another test; they serve)", daemons, after)
	}
}

// restarts is the sum of the pod's containers' restart counts.
func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
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

// getHostPort GETs / through the VM pod's hostPort on the node's bridge
// address (the portmap plugin's DNAT rules, which vmpod's CNI call made).
func (c *cluster) getHostPort(port int, want string) {
	c.t.Helper()
	c.waitFor("GET through the hostPort", "vmpod", time.Minute, func() error {
		body, err := httpGet(fmt.Sprintf("http://%s:%d/", gateway, port))
		if err != nil {
			return err
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})
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
