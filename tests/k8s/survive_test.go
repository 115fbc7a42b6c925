package k8se2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// vmState is what must carry over a restart of the DaemonSet's pod: the
// QEMU process, the guest's uptime and the console lines so far.
type vmState struct {
	qemu   int       // QEMU's pid (the DaemonSet's libvirtd's pid file)
	uptime float64   // the guest's /proc/uptime
	at     time.Time // when uptime was read
	marks  []string  // lines the guest wrote on its console, in order
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

// vmSnapshot records the VM's state and writes a first console mark.
func (c *cluster) vmSnapshot(pod, ctr string) *vmState {
	c.t.Helper()
	pid, err := c.qemuPID(ctr)
	if err != nil || !isQEMU(pid) {
		c.t.Fatalf("QEMU of vmpod-%s: pid %d, %v", ctr, pid, err)
	}
	// QEMU must be outside the DaemonSet pod's cgroup, or the runtime kills
	// it with the pod (docs/install.md#running-vms-survive-restarts).
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if strings.Contains(string(cg), "kubepods") || !strings.Contains(string(cg), "/machine") {
		c.t.Fatalf("QEMU %d is still in the DaemonSet pod's cgroups (kubepods), not in libvirt's /machine:\n%s", pid, cg)
	}
	st := &vmState{qemu: pid}
	st.uptime, st.at = c.guestUptime(pod)
	c.mark(pod, st)
	c.t.Logf("%s: QEMU pid %d, guest up %.0f s", pod, pid, st.uptime)
	return st
}

// checkSurvived checks that the VM is the same one after the DaemonSet's
// pod was replaced, and that the new pod manages it: the same QEMU
// process, an uptime that went on, the console log with the lines from
// before and a new one (logs and exec through the new vmpod).
func (c *cluster) checkSurvived(pod, ctr string, st *vmState, what string) {
	c.t.Helper()
	pid, err := c.qemuPID(ctr)
	if err != nil || pid != st.qemu || !isQEMU(pid) {
		c.t.Fatalf("after %s: QEMU pid %d (%v), want the same process %d still running", what, pid, err, st.qemu)
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
