package k8se2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The node's pod network: Debian's bridge + host-local + portmap plugins on
// a private subnet that exists only on this machine, for containerd and
// vmpod alike (both read the same conf dir). The test makes the bridge
// with the gateway address first, so the kubelet can serve on it: the
// kubelet refuses a loopback node IP. Nothing here routes anywhere else.
const (
	netName   = "vmpod-k8s-e2e"
	bridge    = "vmpodk8s0"
	subnet    = "10.252.0.0/16"
	gateway   = "10.252.0.1"
	nodeName  = "vmpod-k8s-e2e"
	token     = "vmpod-k8s-e2e-token"
	cgroupTop = "vmpod-k8s-e2e" // the kubelet's cgroupRoot
)

// cluster is everything one test run starts: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, the router and the
// kubelet, on 127.0.0.1 and unix sockets under dir; vmpod and libvirtd run
// in the DaemonSet's pod, with their host paths under root.
type cluster struct {
	t     *testing.T
	dir   string // short: unix socket paths are limited to 107 bytes
	bin   string // kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
	guest string

	// root is the private root of the DaemonSet's host paths
	// (/run/libvirt, /var/lib/vmpod, ... are root/run/libvirt, ...), so its
	// libvirtd never meets the host's (daemonset_test.go).
	root      string
	routerBin string // vmpod, copied out of the image

	cniConf, ipamDir, translations string
	containerdSock, vmpodSock      string
	routerSock                     string
	podLogs, kubeletRoot           string
	kubeconfig                     string
	apiPort, kubeletPort           int
	registry                       string // host:port of the registry for checkpoint images (startRegistry)

	procs map[string]*proc

	sysctls    map[string]string // as they were before the kubelet changed them
	madeBridge bool              // setupNetwork made the bridge (teardown removes only then)
	made       []string          // hostDirs that did not exist before the test
}

func newCluster(t *testing.T, bin, guest string) *cluster {
	dir, err := os.MkdirTemp("", "vk8s-")
	if err != nil {
		t.Fatal(err)
	}
	// QEMU runs as libvirt-qemu and opens the VM disks under vmpod's state
	// dir: open the path for traversal.
	os.Chmod(dir, 0o755)
	c := &cluster{t: t, dir: dir, bin: bin, guest: guest, root: filepath.Join(dir, "root"),
		routerBin: filepath.Join(dir, "bin", "vmpod"),
		cniConf:   filepath.Join(dir, "net.d"), ipamDir: filepath.Join(dir, "ipam"),
		translations:   filepath.Join(dir, "images.d"),
		containerdSock: filepath.Join(dir, "c.sock"), vmpodSock: filepath.Join(dir, "root", "run", "vmpod", "vmpod.sock"),
		routerSock: filepath.Join(dir, "r.sock"),
		podLogs:    filepath.Join(dir, "pod-logs"), kubeletRoot: filepath.Join(dir, "kubelet"),
		kubeconfig: filepath.Join(dir, "kubeconfig"),
		procs:      map[string]*proc{}}
	return c
}

func (c *cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *cluster) write(path, content string) {
	c.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// setupNetwork makes the bridge with the gateway address and writes the
// CNI config both runtimes use.
func (c *cluster) setupNetwork() {
	c.t.Helper()
	if out, _ := exec.Command("ip", "-o", "link", "show", bridge).CombinedOutput(); strings.Contains(string(out), bridge+":") {
		c.t.Fatalf("bridge %s already exists: another run of this test, or one that was killed (ip link del %s)", bridge, bridge)
	}
	if out, _ := exec.Command("ip", "-o", "-4", "route", "show", "to", "match", gateway).Output(); strings.Contains(string(out), "10.252.") {
		c.t.Fatalf("%s is already routed on this machine: %s", subnet, out)
	}
	c.mustRun("ip", "link", "add", bridge, "type", "bridge")
	c.madeBridge = true
	c.mustRun("ip", "addr", "add", gateway+"/16", "dev", bridge)
	c.mustRun("ip", "link", "set", bridge, "up")
	c.write(filepath.Join(c.cniConf, "10-"+netName+".conflist"), fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, netName, bridge, c.ipamDir, subnet, gateway))
}

// startEtcd runs Debian's etcd on 127.0.0.1 and returns its client URL.
func (c *cluster) startEtcd() string {
	c.t.Helper()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(c.t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(c.t))
	c.start("etcd", nil, "etcd", "--name", "vmpod-e2e", "--data-dir", c.path("etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "vmpod-e2e="+peer)
	c.waitFor("etcd health", "etcd", time.Minute, func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/health: %s", resp.Status)
		}
		return nil
	})
	return client
}

// startAPIServer runs kube-apiserver on 127.0.0.1 with a static token, no
// authorization, and a freshly generated service-account key.
func (c *cluster) startAPIServer(etcdURL string) {
	c.t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		c.t.Fatal(err)
	}
	keyPath := c.path("sa.key")
	c.write(keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	tokens := c.path("tokens.csv")
	c.write(tokens, token+",vmpod-e2e-admin,vmpod-e2e-admin,system:masters\n")
	c.apiPort = freePort(c.t)
	c.start("kube-apiserver", nil, filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(c.apiPort), "--cert-dir", c.path("apiserver-certs"),
		"--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", keyPath, "--service-account-signing-key-file", keyPath,
		"--service-cluster-ip-range", "10.96.0.0/24",
		// Logs, attach and port-forward go to the kubelet at its node IP,
		// not at its name (which no DNS knows).
		"--kubelet-preferred-address-types", "InternalIP",
		// No controller manager runs: nothing would create the default
		// service account or the root CA ConfigMap its token volume needs.
		"--disable-admission-plugins", "ServiceAccount",
		// Its "kubernetes" Service endpoint would be 127.0.0.1, which an
		// Endpoints object may not hold.
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false", "--profiling=false",
		// The DaemonSet's containers are privileged (kubeadm's API servers
		// allow that too).
		"--allow-privileged=true")
	c.write(c.kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: e2e
  user: {token: %q}
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e}
current-context: e2e
`, c.apiPort, token))
	c.waitFor("kube-apiserver /readyz", "kube-apiserver", 2*time.Minute, func() error {
		_, err := c.kubectl(10*time.Second, "get", "--raw", "/readyz")
		return err
	})
}

// startControllers runs kube-controller-manager with the controllers the
// DaemonSet and the uninstall need (the DaemonSet controller, the garbage
// collector that deletes a deleted DaemonSet's pods, the namespace
// controller that empties a deleted namespace) and kube-scheduler, which
// binds the DaemonSet's pods to the node. Neither serves HTTPS.
func (c *cluster) startControllers() {
	c.t.Helper()
	c.start("kube-controller-manager", nil, filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig", c.kubeconfig, "--controllers", "daemonset,garbagecollector,namespace",
		"--leader-elect=false", "--secure-port", "0", "--use-service-account-credentials=false")
	c.start("kube-scheduler", nil, filepath.Join(c.bin, "kube-scheduler"),
		"--kubeconfig", c.kubeconfig, "--leader-elect=false", "--secure-port", "0")
}

// kubectl runs the built kubectl against the test's API server.
func (c *cluster) kubectl(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
}

func (c *cluster) mustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(2*time.Minute, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// kubectlCmd is kubectl as an exec.Cmd, for the long-running subcommands.
func (c *cluster) kubectlCmd(args ...string) *exec.Cmd {
	return exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
}

// startContainerd runs Debian's containerd with its own root, state and
// socket, the test's CNI config, and the locally built pause image as the
// sandbox image.
func (c *cluster) startContainerd() {
	c.t.Helper()
	conf := c.path("containerd.toml")
	c.write(conf, fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # root here lacks CAP_SYS_RESOURCE: lowering a process's oom_score_adj fails.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSock, c.containerdSock+".ttrpc",
		c.path("containerd", "opt"), pauseImage, c.cniConf))
	c.start("containerd", nil, "containerd", "--config", conf)
	c.waitFor("containerd's CRI", "containerd", time.Minute, func() error {
		_, err := c.crictl(c.containerdSock, "version")
		return err
	})
}

// ctr runs containerd's ctr in the CRI namespace.
func (c *cluster) ctr(args ...string) (string, error) {
	return run(2*time.Minute, "ctr", append([]string{"--address", c.containerdSock, "--namespace", "k8s.io"}, args...)...)
}

// crictl runs crictl against the given socket.
func (c *cluster) crictl(sock string, args ...string) (string, error) {
	return run(2*time.Minute, "crictl", append([]string{"--runtime-endpoint", "unix://" + sock, "--image-endpoint", "unix://" + sock, "--timeout", "60s"}, args...)...)
}

// startKubelet runs the kubelet against the CRI endpoint sock (containerd
// first, the router from the install's step 5 on), registered as node
// nodeName, serving on the bridge's address (the API server reaches it
// there for logs, attach and port-forward).
func (c *cluster) startKubelet(sock string) {
	c.t.Helper()
	if c.kubeletPort == 0 {
		c.kubeletPort = freePort(c.t)
	}
	// The kubelet's cgroupRoot must exist; its pods' cgroups go below it,
	// apart from the host's own.
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		if st, err := os.Stat(filepath.Join(root, "cgroup.procs")); err == nil && !st.IsDir() {
			os.Mkdir(filepath.Join(root, cgroupTop), 0o755)
		}
	}
	if c.sysctls == nil {
		c.sysctls = map[string]string{}
		for _, k := range kubeletSysctls {
			if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
				c.sysctls[k] = strings.TrimSpace(string(b))
			}
		}
	}
	conf := c.path("kubelet.yaml")
	c.write(conf, fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
failSwapOn: false
makeIPTablesUtilChains: false
address: %s
port: %d
readOnlyPort: 0
healthzPort: 0
podLogsDir: %s
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# Nothing on this shared machine may evict the test's pods or images.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, sock, cgroupTop, gateway, c.kubeletPort, c.podLogs))
	c.start("kubelet", nil, filepath.Join(c.bin, "kubelet"), "--config", conf, "--kubeconfig", c.kubeconfig,
		"--root-dir", c.kubeletRoot, "--cert-dir", filepath.Join(c.kubeletRoot, "pki"), "--hostname-override", nodeName, "--node-ip", gateway,
		"--v", "2")
	c.waitFor("node "+nodeName+" Ready", "kubelet", 3*time.Minute, func() error {
		out, err := c.kubectl(10*time.Second, "get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

// restartKubelet stops the kubelet and starts it against sock, as a node's
// administrator does when changing containerRuntimeEndpoint.
func (c *cluster) restartKubelet(sock string) {
	c.t.Helper()
	c.stop("kubelet", 30*time.Second)
	c.startKubelet(sock)
}

// teardown stops everything in reverse order and removes what the
// processes leave: pods of both runtimes, containerd's shims, mounts under
// the kubelet's root dir, the kubelet's cgroups, the bridge, the temp dir.
func (c *cluster) teardown() {
	c.stop("kubelet", 30*time.Second)
	for k, v := range c.sysctls {
		if b, _ := os.ReadFile("/proc/sys/" + k); strings.TrimSpace(string(b)) != v {
			c.t.Logf("sysctl %s: putting back %s (the kubelet set %s)", k, v, strings.TrimSpace(string(b)))
			os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
		}
	}
	c.stop("kube-controller-manager", 10*time.Second)
	c.stop("kube-scheduler", 10*time.Second)
	// VM pods first, while the DaemonSet's vmpod and libvirtd run; then
	// containerd's pods, the DaemonSet's among them.
	for _, sock := range []string{c.vmpodSock, c.containerdSock} {
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		out, _ := c.crictl(sock, "pods", "-q")
		for _, id := range strings.Fields(out) {
			c.crictl(sock, "stopp", id)
			c.crictl(sock, "rmp", "-f", id)
		}
	}
	c.stop("router", 10*time.Second)
	// containerd's shims outlive it on purpose; the ones of this run name
	// its socket on their command line.
	shims := c.shimPIDs()
	c.stop("containerd", 30*time.Second)
	for _, pid := range shims {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// QEMUs the DaemonSet's libvirtd left (a failed run): their pid files
	// are under the private root, so no other libvirtd's VM is touched.
	if pids := c.qemuPIDs(); len(pids) > 0 {
		for _, pid := range pids {
			c.t.Logf("killing QEMU %d of the DaemonSet's libvirtd", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Second) // for the kernel to empty their cgroups
	}
	c.removeMachineCgroups()
	c.stop("kube-apiserver", 30*time.Second)
	c.stop("etcd", 30*time.Second)
	for _, m := range c.mountsUnder() {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	removeCgroups(cgroupTop)
	for _, d := range c.made {
		if d == "/var/lib/kubelet/device-plugins" {
			os.Remove(filepath.Join(d, "kubelet.sock"))
		}
		os.Remove(d) // only when empty
	}
	if c.madeBridge {
		exec.Command("ip", "link", "del", bridge).Run()
	}
	if os.Getenv("VMPOD_K8S_KEEP") == "" {
		os.RemoveAll(c.dir)
	} else {
		c.t.Logf("kept %s", c.dir)
	}
}
