package k8se2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// vmState is what must carry over a restart of the DaemonSet's pod: the
// QEMU process, the guest's uptime and the console lines so far.
type vmState struct {
	qemu   int       // QEMU's pid (the DaemonSet's libvirtd's pid file)
	uptime float64   // the guest's /proc/uptime
	at     time.Time // when uptime was read
	marks  []string  // lines the guest wrote on its console, in order
	// disruptions is how many times the kubelet had seen the VM pod's
	// sandbox or container go (kubeletSawGone).
	disruptions int
}

// qemuPID reads the pid file the DaemonSet's libvirtd keeps for the
// domain of container ctr, under the private root.
func (c *cluster) qemuPID(ctr string) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.root, "run/libvirt/qemu", "vmpod-"+ctr+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// qemuPIDs lists the QEMUs the DaemonSet's libvirtd started that still run.
func (c *cluster) qemuPIDs() []int {
	files, _ := filepath.Glob(filepath.Join(c.root, "run/libvirt/qemu", "*.pid"))
	var pids []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && isQEMU(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isQEMU(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(strings.SplitN(string(b), "\x00", 2)[0], "qemu-system")
}

// guestUptime runs `kubectl exec` in the VM (through the guest agent).
func (c *cluster) guestUptime(pod string) (float64, time.Time) {
	c.t.Helper()
	var up float64
	var at time.Time
	c.waitFor("kubectl exec "+pod+" -- cat /proc/uptime", "vmpod", 2*time.Minute, func() error {
		out, err := c.kubectl(time.Minute, "exec", pod, "-c", "vm", "--", "cat", "/proc/uptime")
		if err != nil {
			return err
		}
		at = time.Now()
		f := strings.Fields(out)
		if len(f) != 2 {
			return fmt.Errorf("/proc/uptime: %q", out)
		}
		up, err = strconv.ParseFloat(f[0], 64)
		return err
	})
	return up, at
}

// mark has the guest write a line on its serial console (through
// `kubectl exec`) and waits for `kubectl logs` to show it.
func (c *cluster) mark(pod string, st *vmState) {
	c.t.Helper()
	m := fmt.Sprintf("vmpod-k8s-e2e-mark-%d", len(st.marks)+1)
	c.mustKubectl("exec", pod, "-c", "vm", "--", "sh", "-c", "echo "+m+" > /dev/ttyS0")
	c.waitKubectlLogs(pod, m, time.Minute)
	st.marks = append(st.marks, m)
}

// vmSnapshot records the VM's state and writes a first console mark; ds is
// the DaemonSet's pod, whose cgroups QEMU must have left.
func (c *cluster) vmSnapshot(pod, ctr string, ds *corev1.Pod) *vmState {
	c.t.Helper()
	pid, err := c.qemuPID(ctr)
	if err != nil || !isQEMU(pid) {
		c.t.Fatalf("QEMU of vmpod-%s: pid %d, %v", ctr, pid, err)
	}
	// QEMU must be outside every cgroup of the DaemonSet's pod, or the
	// runtime kills it with the pod (docs/install.md#running-vms-survive-restarts).
	// The DaemonSet's libvirtd, which is in them, shows that the check
	// recognises the pod's cgroups.
	if d := c.dsContainerPID(ds, "libvirt"); len(c.inPodCgroups(d, ds)) == 0 {
		c.t.Fatalf("libvirtd %d is in none of the cgroups of the DaemonSet's pod %s (uid %s): the cgroup check cannot see them", d, ds.Name, ds.UID)
	}
	if in := c.inPodCgroups(pid, ds); len(in) > 0 {
		c.t.Fatalf("QEMU %d is still in cgroups of the DaemonSet's pod %s: %v", pid, ds.Name, in)
	}
	st := &vmState{qemu: pid, disruptions: c.kubeletSawGone(pod)}
	st.uptime, st.at = c.guestUptime(pod)
	c.mark(pod, st)
	c.t.Logf("%s: QEMU pid %d, guest up %.0f s", pod, pid, st.uptime)
	return st
}

// checkSurvived checks that the VM is the same one after the DaemonSet's
// pod was replaced by ds, and that the new pod manages it: the same QEMU
// process (outside ds's cgroups too), an uptime that went on, the console log with the lines from
// before and a new one (logs and exec through the new vmpod).
func (c *cluster) checkSurvived(pod, ctr string, st *vmState, ds *corev1.Pod, what string) {
	c.t.Helper()
	pid, err := c.qemuPID(ctr)
	if err != nil || pid != st.qemu || !isQEMU(pid) {
		c.t.Fatalf("after %s: QEMU pid %d (%v), want the same process %d still running", what, pid, err, st.qemu)
	}
	// The new pod's libvirtd has the domain: its pid file names the same
	// QEMU, and it answers for the domain.
	if out, err := c.virsh("domstate", "vmpod-"+ctr); err != nil || strings.TrimSpace(out) != "running" {
		c.t.Fatalf("after %s: the new libvirtd says domain vmpod-%s is %q (%v), want running", what, ctr, strings.TrimSpace(out), err)
	}
	if in := c.inPodCgroups(pid, ds); len(in) > 0 {
		c.t.Fatalf("after %s: QEMU %d is in cgroups of the new DaemonSet pod %s: %v", what, pid, ds.Name, in)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		c.t.Fatalf("after %s: QEMU %d: %v", what, pid, err)
	}
	up, at := c.guestUptime(pod)
	// The guest's clock follows the host's (QEMU's virtual clock, also
	// under TCG): its uptime grew by about the time that passed. Half of it
	// leaves room for a guest starved of CPU; a reboot would start again
	// from zero.
	elapsed := at.Sub(st.at).Seconds()
	if up < st.uptime+elapsed/2 {
		c.t.Fatalf("after %s: guest uptime %.1f s, was %.1f s %.0f s ago: the guest rebooted", what, up, st.uptime, elapsed)
	}
	// The kubelet never took the VM pod for gone while vmpod was away (the
	// router holds vmpod's lists): no new sandbox asked for, no container
	// seen dying, and the pod's status is the same container, running,
	// never restarted.
	if n := c.kubeletSawGone(pod); n != st.disruptions {
		c.t.Fatalf("after %s: the kubelet saw %s's sandbox or container go %d times (its log):\n%s", what, pod, n-st.disruptions,
			strings.Join(c.kubeletGoneLines(pod)[st.disruptions:], "\n"))
	}
	p := c.waitPod(pod, time.Minute, podReady)
	if len(p.Status.ContainerStatuses) != 1 {
		c.t.Fatalf("after %s: %s has container statuses %+v", what, pod, p.Status.ContainerStatuses)
	}
	cs := p.Status.ContainerStatuses[0]
	if !strings.HasSuffix(cs.ContainerID, "://"+ctr) || cs.RestartCount != 0 || cs.State.Running == nil || cs.LastTerminationState.Terminated != nil {
		c.t.Fatalf("after %s: %s's container status %+v, want %s running, never restarted or terminated", what, pod, cs, ctr)
	}
	logs := c.mustKubectl("logs", pod)
	for _, m := range append([]string{"vmpod-test-guest ready"}, st.marks...) {
		if !strings.Contains(logs, m) {
			c.t.Fatalf("after %s: kubectl logs lost %q:\n%s", what, m, tail(logs, 20))
		}
	}
	c.mark(pod, st)
	c.t.Logf("after %s: QEMU pid %d, guest up %.0f s (was %.0f s, %.0f s ago), console marks %v", what, pid, up, st.uptime, elapsed, st.marks)
	st.uptime, st.at = up, at
}

// vmpodVersion is what the DaemonSet's vmpod reports in the CRI Version
// call: the version hack/build-image.sh stamped in, which is the tag.
func (c *cluster) vmpodVersion() string {
	c.t.Helper()
	out, err := c.crictl(c.vmpodSock, "version")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "RuntimeVersion:"); ok {
			return strings.TrimSpace(v)
		}
	}
	c.t.Fatalf("crictl version: no RuntimeVersion in %q", out)
	return ""
}

// virsh asks the DaemonSet's libvirtd, on its socket under the private root.
func (c *cluster) virsh(args ...string) (string, error) {
	uri := "qemu:///system?socket=" + filepath.Join(c.root, "run/libvirt/libvirt-sock")
	return run(30*time.Second, "virsh", append([]string{"-c", uri}, args...)...)
}

// dsContainerPID returns the host pid of the main process of container
// name (libvirt: libvirtd; vmpod) in the DaemonSet's pod ds, from containerd.
func (c *cluster) dsContainerPID(ds *corev1.Pod, name string) int {
	c.t.Helper()
	out, err := c.crictl(c.containerdSock, "pods", "--namespace", dsNamespace, "--name", ds.Name, "--state", "ready", "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		c.t.Fatalf("containerd's sandbox of %s: %v %q", ds.Name, err, out)
	}
	out, err = c.crictl(c.containerdSock, "ps", "--pod", strings.TrimSpace(out), "--name", "^"+name+"$", "--state", "running", "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		c.t.Fatalf("container %s of %s: %v %q", name, ds.Name, err, out)
	}
	out, err = c.crictl(c.containerdSock, "inspect", "-o", "json", strings.TrimSpace(out))
	if err != nil {
		c.t.Fatal(err)
	}
	var v struct{ Info struct{ Pid int } }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Info.Pid <= 0 {
		c.t.Fatalf("crictl inspect %s of %s: pid %d, %v", name, ds.Name, v.Info.Pid, err)
	}
	return v.Info.Pid
}

// inPodCgroups lists the lines of /proc/<pid>/cgroup that put pid in a
// cgroup of the pod: a path with pod<uid> (cgroupfs driver) or
// pod<uid with underscores> (systemd driver) in it.
func (c *cluster) inPodCgroups(pid int, pod *corev1.Pod) []string {
	c.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		c.t.Fatalf("cgroups of %d: %v", pid, err)
	}
	uid := string(pod.UID)
	if uid == "" {
		c.t.Fatalf("pod %s has no uid", pod.Name)
	}
	keys := []string{"pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_")}
	var in []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(l, k) }) {
			in = append(in, l)
		}
	}
	return in
}

// kubeletGoneLines are the kubelet's log lines that say it saw the sandbox
// or the container of pod (in the default namespace) go: a PLEG
// ContainerDied event, or the decision to start a new sandbox. The first
// start of the pod logs one of the latter.
func (c *cluster) kubeletGoneLines(pod string) []string {
	var lines []string
	for _, l := range strings.Split(c.log("kubelet"), "\n") {
		if strings.Contains(l, `pod="default/`+pod+`"`) &&
			(strings.Contains(l, `"Type":"ContainerDied"`) || strings.Contains(l, "Need to start a new one")) {
			lines = append(lines, l)
		}
	}
	return lines
}

func (c *cluster) kubeletSawGone(pod string) int { return len(c.kubeletGoneLines(pod)) }
