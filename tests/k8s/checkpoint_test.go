package k8se2e

import (
	"archive/tar"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Checkpoint and restore through the kubelet (docs/snapshots.md): the
// kubelet's checkpoint API has vmpod write the VM pod's VM to an archive
// in the kubelet's checkpoint directory; the archive goes to a registry as
// a checkpoint image (an OCI image whose layer holds the archive as the
// one file under /checkpoint/); a new pod whose image is that reference is
// the same VM, carrying on in the new pod.
const (
	restoredPod = "vm-restored"
	// The test guest's console lines from the counter the test starts in
	// it (as tests/e2e/checkpoint_test.go does).
	counterLine = "vmpod-counter"
	// registriesConfigMap holds the registries.conf that lets vmpod pull
	// from the test's plain-HTTP registry; it is mounted at
	// registriesMount in the vmpod container (writeOverlay).
	registriesConfigMap = "vmpod-e2e-registries"
	registriesMount     = "/etc/vmpod/e2e-registries"
)

var counterRE = regexp.MustCompile(counterLine + ` (\d+)`)

// counters lists the counter values in a pod's log, in order.
func counters(logs string) []int {
	var ns []int
	for _, m := range counterRE.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		ns = append(ns, n)
	}
	return ns
}

// lastCounter is the highest counter value in a pod's log, -1 for none.
func lastCounter(logs string) int {
	last := -1
	for _, n := range counters(logs) {
		last = max(last, n)
	}
	return last
}

// checkpointDir is the test's kubelet's checkpoint directory (its root
// dir's checkpoints/), mounted into the vmpod container at the same path.
func (c *cluster) checkpointDir() string { return filepath.Join(c.kubeletRoot, "checkpoints") }

// startRegistry starts Debian's docker-registry on a free port of
// 127.0.0.1 with tests/e2e/registry's script, for the checkpoint image;
// it is stopped, and its blobs removed, when the test ends.
func (c *cluster) startRegistry() {
	c.t.Helper()
	port := freePort(c.t)
	dir := c.path("registry")
	cmd := exec.Command(filepath.Join(repo, "tests/e2e/registry/start-registry.sh"), fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "REGISTRY_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("start the registry: %v\n%s", err, out)
	}
	c.t.Cleanup(func() {
		if out, err := exec.Command(filepath.Join(repo, "tests/e2e/registry/stop-registry.sh"), dir, "--purge").CombinedOutput(); err != nil {
			c.t.Logf("stop the registry: %v\n%s", err, out)
		}
	})
	c.registry = fmt.Sprintf("127.0.0.1:%d", port)
}

// registriesConf is containers-registries.conf(5) letting vmpod pull from
// the test's registry over plain HTTP; empty without one.
func (c *cluster) registriesConf() string {
	if c.registry == "" {
		return ""
	}
	return fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", c.registry)
}

// startCounter starts a shell loop in the VM (kubectl exec, through the
// guest agent) that writes "vmpod-counter N" on the console every second,
// and waits until kubectl logs shows it counting.
func (c *cluster) startCounter(pod string) {
	c.t.Helper()
	c.mustKubectl("exec", pod, "-c", "vm", "--", "sh", "-c",
		`i=0; while :; do echo "`+counterLine+` $i" >/dev/ttyS0; i=$((i+1)); sleep 1; done </dev/null >/dev/null 2>&1 &`)
	c.waitFor("kubectl logs "+pod+": the counter at 3", "vmpod", 2*time.Minute, func() error {
		out, err := c.kubectl(30*time.Second, "logs", pod)
		if err != nil {
			return err
		}
		if lastCounter(out) < 3 {
			return fmt.Errorf("no %s 3 in:\n%s", counterLine, tail(out, 15))
		}
		return nil
	})
}

// checkpointed is what the kubelet's checkpoint API gave.
type checkpointed struct {
	archive string // the archive's path, as the kubelet answered it
	// before is the last counter value the pod logged before the call,
	// after the last one logged once the call had returned, took the
	// call's duration.
	before, after int
	took          time.Duration
}

// savedCounterMax bounds the counter value the saved guest had: the guest
// counts at most once a second, and it was saved at most took after
// before was read (with two seconds for the console's way to the log and
// one for the line being written), unless the original logged more once
// the call had returned.
func (ck checkpointed) savedCounterMax() int {
	return max(ck.after, ck.before+int(math.Ceil(ck.took.Seconds()))+3)
}

// kubeletCheckpoint calls the kubelet's checkpoint API for the
// container of pod and checks the archive it names.
func (c *cluster) kubeletCheckpoint(pod, container string) checkpointed {
	c.t.Helper()
	var ck checkpointed
	ck.before = lastCounter(c.mustKubectl("logs", pod))
	// The kubelet serves HTTPS on the node IP with a self-signed
	// certificate; its configuration (startKubelet) lets anonymous
	// requests through (anonymous authentication, AlwaysAllow).
	cl := &http.Client{Timeout: 6 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	// The TCG save of the guest's memory and the archive's write take a
	// while: ask for 5 minutes rather than the kubelet's CRI default (2).
	url := fmt.Sprintf("https://%s:%d/checkpoint/default/%s/%s?timeout=300", gateway, c.kubeletPort, pod, container)
	start := time.Now()
	resp, err := cl.Post(url, "", nil)
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	ck.took = time.Since(start)
	ck.after = lastCounter(c.mustKubectl("logs", pod))
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST %s: %s %s", url, resp.Status, body)
	}
	var items struct{ Items []string }
	if err := json.Unmarshal(body, &items); err != nil || len(items.Items) != 1 {
		c.t.Fatalf("POST %s: answer %q (%v), want {\"items\":[ARCHIVE]}", url, body, err)
	}
	ck.archive = items.Items[0]
	if filepath.Dir(ck.archive) != c.checkpointDir() {
		c.t.Fatalf("the kubelet's archive %s is not in its checkpoint directory %s", ck.archive, c.checkpointDir())
	}
	st, err := os.Stat(ck.archive)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 || st.Size() == 0 {
		c.t.Fatalf("the archive the kubelet named: %v %v (want a non-empty regular file, mode 0600)", st, err)
	}
	c.checkArchive(ck.archive, pod)
	c.t.Logf("kubelet checkpoint API: %s in %.1fs, %.1f MiB; counter %d before the call, %d after",
		filepath.Base(ck.archive), ck.took.Seconds(), float64(st.Size())/(1<<20), ck.before, ck.after)
	return ck
}

// checkArchive reads the archive's first member, the manifest
// (docs/snapshots.md), and checks that it is vmpod's checkpoint of pod.
func (c *cluster) checkArchive(path, pod string) {
	c.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != "checkpoint.json" {
		c.t.Fatalf("%s: first member %v %v, want checkpoint.json", path, h, err)
	}
	var m struct {
		Format  string
		Version int
		Members []struct{ Name string }
		Meta    struct {
			PodName      string `json:"pod_name"`
			PodNamespace string `json:"pod_namespace"`
			ImageName    string `json:"image_name"`
			ImageRef     string `json:"image_ref"`
		}
	}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil {
		c.t.Fatalf("%s: checkpoint.json: %v", path, err)
	}
	// The kubelet creates containers with the image ID, so the image's
	// name in the archive may be the ID too: only the ID is checked.
	if m.Format != "vmpod.dev/checkpoint" || m.Version != 1 || m.Meta.PodName != pod || m.Meta.PodNamespace != "default" ||
		!strings.HasPrefix(m.Meta.ImageRef, "sha256:") || len(m.Members) < 3 {
		c.t.Fatalf("%s: manifest %+v, want vmpod.dev/checkpoint version 1 of pod default/%s with its image ID and members", path, m, pod)
	}
	c.t.Logf("%s: members %v, image %s (%s)", filepath.Base(path), m.Members, m.Meta.ImageRef, m.Meta.ImageName)
}

// pushCheckpoint pushes the archive to the test's registry as a
// checkpoint image and returns its reference.
func (c *cluster) pushCheckpoint(archive, repoTag string) string {
	c.t.Helper()
	ref := c.registry + "/" + repoTag
	cmd := exec.Command(filepath.Join(repo, "tests/e2e/registry/push-containerdisk.sh"), archive, ref)
	cmd.Env = append(os.Environ(), "DISK_DIR=checkpoint")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		c.t.Fatalf("push %s as %s: %v\n%s", archive, ref, err, stderr)
	}
	c.t.Logf("pushed %s: %s", ref, strings.TrimSpace(string(out)))
	return ref
}

// restoredPodManifest is a VM pod in the checkpointed pod's namespace
// whose image is the checkpoint image ref, with the limits of the
// checkpointed container (the saved VM has its shape) and a readiness
// probe on the guest's port 8080, which the kubelet makes at the new
// pod's IP. It requests less CPU than its limit: the node (2 cores) has
// no second whole core for it beside the checkpointed pod.
func (c *cluster) restoredPodManifest(ref string, limits corev1.ResourceList) string {
	no := false
	resources := corev1.ResourceRequirements{Limits: limits, Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: limits[corev1.ResourceMemory]}}
	handler := "vmpod"
	pod := corev1.Pod{
		TypeMeta:   metaType(),
		ObjectMeta: objectMeta(restoredPod),
		Spec: corev1.PodSpec{
			NodeName:                     nodeName,
			RuntimeClassName:             &handler,
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name: "vm", Image: ref, ImagePullPolicy: corev1.PullIfNotPresent,
				Ports:     []corev1.ContainerPort{{ContainerPort: 8080}},
				Resources: resources,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intOrString(8080)}},
					PeriodSeconds: 2,
				},
			}},
		},
	}
	return c.manifest(restoredPod, pod)
}

// runningOrStuck is podRunning, failing the test at once when the pod
// failed (the kubelet refused it) or its container waits for a reason no
// retry cures here (an image the kubelet cannot pull or vmpod refuses, a
// create that fails): the registry is local, so such an error is not
// transient.
func (c *cluster) runningOrStuck(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodFailed {
		c.t.Fatalf("pod %s failed: %s: %s", p.Name, p.Status.Reason, p.Status.Message)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError", "CreateContainerConfigError":
				c.t.Fatalf("pod %s: container %s waits: %s: %s", p.Name, cs.Name, w.Reason, w.Message)
			}
		}
	}
	return podRunning(p)
}

// checkRestored checks the restored pod: a pod IP of its own, the guest's
// counter carrying on from the checkpoint (so the guest did not boot), the
// guest's HTTP server on the new IP.
func (c *cluster) checkRestored(ck checkpointed, oldIP string) *corev1.Pod {
	c.t.Helper()
	p := c.waitPod(restoredPod, bootLimit, c.runningOrStuck)
	ip := p.Status.PodIP
	if !strings.HasPrefix(ip, "10.252.") || ip == oldIP {
		c.t.Fatalf("%s: pod IP %q, want a new one from %s (the checkpointed pod has %s)", restoredPod, ip, subnet, oldIP)
	}
	var logs string
	c.waitFor("kubectl logs "+restoredPod+": the counter", "vmpod", 2*time.Minute, func() error {
		var err error
		if logs, err = c.kubectl(30*time.Second, "logs", restoredPod); err != nil {
			return err
		}
		if len(counters(logs)) < 2 {
			return fmt.Errorf("fewer than two counter lines in:\n%s", tail(logs, 15))
		}
		return nil
	})
	// The saved guest had logged at least ck.before: the restored one goes
	// on from there, not from 0, and not from much later.
	first := counters(logs)[0]
	if first < ck.before || first > ck.savedCounterMax()+1 {
		c.t.Fatalf("%s: the counter starts at %d; the checkpointed guest was between %d and %d at the checkpoint:\n%s",
			restoredPod, first, ck.before, ck.savedCounterMax(), tail(logs, 15))
	}
	if strings.Contains(logs, "vmpod-test-guest ready") {
		c.t.Fatalf("%s: the guest booted (its ready line is in the log):\n%s", restoredPod, tail(logs, 30))
	}
	c.t.Logf("%s: pod IP %s (the checkpointed pod's %s); its counter starts at %d (%d..%d at the checkpoint)", restoredPod, ip, oldIP, first, ck.before, ck.savedCounterMax())
	// The guest moves to the new pod's MAC and renews its lease once its
	// agent answers; the kubelet's probe and the test reach it at the new
	// IP then.
	p = c.waitPod(restoredPod, 2*time.Minute, podReady)
	if body, err := httpGet("http://" + ip + ":8080/"); err != nil || !strings.Contains(body, "vmpod-test-guest") {
		c.t.Fatalf("GET the restored guest at %s:8080: %v %q", ip, err, body)
	}
	return p
}
