package k8se2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// qemuSample is QEMU's own CPU time and private resident memory at one
// moment, from /proc, and what of that memory is still charged to
// libvirt's cgroup of the VM, where QEMU allocated it before its move.
type qemuSample struct {
	at      time.Time
	cpuNs   uint64 // utime + stime
	anon    uint64 // RssAnon + RssShmem
	rss     uint64 // VmRSS (file pages too)
	libvirt uint64 // libvirt's cgroup's total_rss + total_shmem
	failed  bool
}

func readQEMU(pid, libvirtMemCg string) qemuSample {
	s := qemuSample{at: time.Now()}
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	status, err2 := os.ReadFile(filepath.Join("/proc", pid, "status"))
	memStat, err3 := os.ReadFile(filepath.Join(libvirtMemCg, "memory.stat"))
	if err != nil || err2 != nil || err3 != nil {
		return qemuSample{failed: true}
	}
	for _, l := range strings.Split(string(memStat), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && (k == "total_rss" || k == "total_shmem") {
			n, _ := strconv.ParseUint(v, 10, 64)
			s.libvirt += n
		}
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	s.cpuNs = (utime + stime) * uint64(time.Second/100)
	kb := func(key string) uint64 {
		m := regexp.MustCompile(key + `:\s+(\d+) kB`).FindSubmatch(status)
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseUint(string(m[1]), 10, 64)
		return n << 10
	}
	s.anon, s.rss = kb("RssAnon")+kb("RssShmem"), kb("VmRSS")
	return s
}

// summary is the part of the kubelet's /stats/summary the test reads.
type summary struct {
	Node struct {
		SystemContainers []struct {
			Name   string
			CPU    usageCPU
			Memory usageMem
		}
	}
	Pods []struct {
		PodRef     struct{ Name, Namespace, UID string }
		CPU        usageCPU
		Memory     usageMem
		Containers []struct {
			Name   string
			CPU    usageCPU
			Memory usageMem
		}
	}
}

type usageCPU struct {
	Time                 time.Time
	UsageCoreNanoSeconds uint64
}

type usageMem struct {
	Time            time.Time
	WorkingSetBytes uint64
}

func within(a, b uint64, frac float64) bool {
	d := float64(a) - float64(b)
	return d <= frac*float64(b) && -d <= frac*float64(b)
}

// checkVMResources checks the running VM pod against the kernel and the
// kubelet: every thread of its QEMU in <pod cgroup>/vmpod-<container ID>
// (the pod cgroup being the kubelet's, under its cgroupRoot), its memory
// limit guest RAM plus the RuntimeClass overhead, and the kubelet's
// /stats/summary showing the pod's CPU and memory, non-zero, within 10%
// of QEMU's own figures at the same moment, and inside the node's "pods"
// (allocatable) cgroup's. QEMU's own figures are compared like with like
// (docs/resources.md): its CPU time less what it used before vmpod
// placed it (the placement in vmpod's verbose container status), its
// private memory less what of it is still charged to libvirt's cgroup.
func (c *cluster) checkVMResources(t *testing.T, vmCtr string) {
	t.Helper()
	qemu, err := c.qemuPID(vmCtr)
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(qemu)
	uid := c.mustKubectl("get", "pod", vmPod, "-o", "jsonpath={.metadata.uid}")

	// Where each thread is: the memory hierarchy names the pod cgroup,
	// every other hierarchy but devices must agree.
	var vmCg string
	tasks, err := os.ReadDir(filepath.Join("/proc", pid, "task"))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		f, err := os.Open(filepath.Join("/proc", pid, "task", task.Name(), "cgroup"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 || parts[1] == "devices" {
				continue
			}
			if vmCg == "" {
				vmCg = parts[2]
			}
			if parts[2] != vmCg {
				t.Errorf("QEMU thread %s in %s:%s, not in %s", task.Name(), parts[1], parts[2], vmCg)
			}
		}
		f.Close()
	}
	if !strings.HasPrefix(vmCg, "/"+cgroupTop+"/kubepods/") || !strings.HasSuffix(vmCg, "/pod"+uid+"/vmpod-"+vmCtr) {
		t.Fatalf("QEMU is in %s, not in the pod's cgroup (pod UID %s) under /%s/kubepods", vmCg, uid, cgroupTop)
	}
	podCg := filepath.Dir(vmCg)
	t.Logf("QEMU (pid %s, %d threads) in %s", pid, len(tasks), vmCg)
	read := func(h, p, file string) string {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", h, p, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	// examples/vm-readiness-probe.yaml: 512Mi, one CPU; the RuntimeClass
	// (deploy/30-runtimeclass.yaml): 64Mi overhead.
	if got, want := read("memory", vmCg, "memory.limit_in_bytes"), strconv.Itoa((512+64)<<20); got != want {
		t.Errorf("VM memory limit %s, want %s (guest RAM + RuntimeClass overhead)", got, want)
	}
	if got := read("cpu", vmCg, "cpu.cfs_quota_us"); got != "100000" {
		t.Errorf("VM CPU quota %s, want 100000 (one CPU)", got)
	}
	t.Logf("limits: VM memory %s, pod memory %s (the kubelet's), VM CPU quota %s/%s",
		read("memory", vmCg, "memory.limit_in_bytes"), read("memory", podCg, "memory.limit_in_bytes"),
		read("cpu", vmCg, "cpu.cfs_quota_us"), read("cpu", vmCg, "cpu.cfs_period_us"))

	// vmpod's record of the placement: what QEMU used before, and
	// libvirt's cgroup it left, where its memory of then stays charged.
	out, err := c.crictl(c.vmpodSock, "inspect", "-o", "json", vmCtr)
	if err != nil {
		t.Fatal(err)
	}
	var ci struct {
		Info struct {
			Cgroup *struct {
				Path             string
				Libvirt          []string
				StartCPUNs       uint64 `json:"start_cpu_ns"`
				StartMemoryBytes uint64 `json:"start_memory_bytes"`
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &ci); err != nil {
		t.Fatal(err)
	}
	pl := ci.Info.Cgroup
	if pl == nil || pl.Path != vmCg {
		t.Fatalf("vmpod's placement %+v, want %s", pl, vmCg)
	}
	var libvirtMemCg string
	for _, d := range pl.Libvirt {
		if strings.HasPrefix(d, "/sys/fs/cgroup/memory/") {
			libvirtMemCg = d
		}
	}
	if libvirtMemCg == "" {
		t.Fatalf("vmpod's placement names no memory cgroup of libvirt's QEMU left: %q", pl.Libvirt)
	}
	t.Logf("before it was placed QEMU used %d ns of CPU and %d bytes of memory (charged to %s)", pl.StartCPUNs, pl.StartMemoryBytes, libvirtMemCg)

	// QEMU's own figures every 100 ms while the summary is read, so they
	// can be matched with the moment the summary's figures were taken.
	var mu sync.Mutex
	var samples []qemuSample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if s := readQEMU(pid, libvirtMemCg); !s.failed {
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	sampling := time.Now()
	var sum summary
	var podIdx = -1
	c.waitFor("the VM pod in /stats/summary, taken after sampling began", "kubelet", 2*time.Minute, func() error {
		out, err := c.kubectl(30*time.Second, "get", "--raw", "/api/v1/nodes/"+nodeName+"/proxy/stats/summary")
		if err != nil {
			return err
		}
		sum = summary{}
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			return err
		}
		for i, p := range sum.Pods {
			if p.PodRef.Name == vmPod {
				podIdx = i
				// Whole seconds: wait for one a second past the start.
				if p.CPU.Time.Before(sampling.Add(time.Second)) || p.Memory.Time.Before(sampling.Add(time.Second)) {
					return fmt.Errorf("figures from %v (CPU) and %v (memory), before sampling began", p.CPU.Time, p.Memory.Time)
				}
				return nil
			}
		}
		return fmt.Errorf("no pod %s in the summary", vmPod)
	})
	time.Sleep(1100 * time.Millisecond) // samples after the summary's second too
	close(stop)
	wg.Wait()
	at := func(ts time.Time) qemuSample {
		// The summary's times are whole seconds: the sample in the middle
		// of that second.
		mid := ts.Add(500 * time.Millisecond)
		best := samples[0]
		for _, s := range samples {
			if s.at.Sub(mid).Abs() < best.at.Sub(mid).Abs() {
				best = s
			}
		}
		return best
	}
	p := sum.Pods[podIdx]
	if len(samples) == 0 {
		t.Fatalf("QEMU's own figures could not be read (pid %s, %s)", pid, libvirtMemCg)
	}
	qc, qm := at(p.CPU.Time), at(p.Memory.Time)
	cpuSince, memSince := qc.cpuNs-pl.StartCPUNs, qm.anon-qm.libvirt
	t.Logf("/stats/summary pod %s: CPU %d ns at %v, working set %d bytes at %v; QEMU's own then: CPU %d ns (%d since placed), private resident memory %d bytes (%d still charged to libvirt's cgroup; RSS with file pages %d)",
		vmPod, p.CPU.UsageCoreNanoSeconds, p.CPU.Time.Format(time.TimeOnly), p.Memory.WorkingSetBytes, p.Memory.Time.Format(time.TimeOnly),
		qc.cpuNs, cpuSince, qm.anon, qm.libvirt, qm.rss)
	pct := func(a, b uint64) float64 { return 100 * (float64(a) - float64(b)) / float64(b) }
	t.Logf("pod vs QEMU's own: CPU %+.1f%% since placed (%+.1f%% of all), memory %+.1f%% of what is charged since placed (%+.1f%% of all)",
		pct(p.CPU.UsageCoreNanoSeconds, cpuSince), pct(p.CPU.UsageCoreNanoSeconds, qc.cpuNs),
		pct(p.Memory.WorkingSetBytes, memSince), pct(p.Memory.WorkingSetBytes, qm.anon))
	if p.CPU.UsageCoreNanoSeconds == 0 || p.Memory.WorkingSetBytes == 0 {
		t.Errorf("the summary shows no CPU or memory for the VM pod: %+v", p)
	}
	if !within(p.CPU.UsageCoreNanoSeconds, cpuSince, 0.10) {
		t.Errorf("pod CPU %d ns is not within 10%% of QEMU's %d ns since it was placed", p.CPU.UsageCoreNanoSeconds, cpuSince)
	}
	if !within(p.Memory.WorkingSetBytes, memSince, 0.10) {
		t.Errorf("pod working set %d bytes is not within 10%% of QEMU's private resident memory charged since it was placed (%d bytes)", p.Memory.WorkingSetBytes, memSince)
	}
	for _, ct := range p.Containers {
		t.Logf("/stats/summary container %s (from vmpod's CRI stats): CPU %d ns, working set %d bytes", ct.Name, ct.CPU.UsageCoreNanoSeconds, ct.Memory.WorkingSetBytes)
		if ct.Name == "vm" && (ct.CPU.UsageCoreNanoSeconds == 0 || ct.Memory.WorkingSetBytes == 0) {
			t.Errorf("the summary shows no CPU or memory for the VM container: %+v", ct)
		}
	}
	// Node allocatable: the kubelet's "pods" cgroup, whose limit is the
	// node's allocatable memory and whose usage eviction reads, holds the
	// VM: in the kernel (read back to back) and in the summary (taken at
	// another moment than the pod's: a 5% margin).
	kubepods := "/" + cgroupTop + "/kubepods"
	vmUse, _ := strconv.ParseUint(read("memory", vmCg, "memory.usage_in_bytes"), 10, 64)
	allUse, _ := strconv.ParseUint(read("memory", kubepods, "memory.usage_in_bytes"), 10, 64)
	t.Logf("memory charged: VM cgroup %d bytes, %s %d bytes (limit %s)", vmUse, kubepods, allUse, read("memory", kubepods, "memory.limit_in_bytes"))
	if allUse < vmUse {
		t.Errorf("%s is charged %d bytes, less than the VM's %d: the VM does not count against allocatable", kubepods, allUse, vmUse)
	}
	found := false
	for _, sc := range sum.Node.SystemContainers {
		if sc.Name == "pods" {
			found = true
			t.Logf("/stats/summary node pods cgroup: CPU %d ns, working set %d bytes", sc.CPU.UsageCoreNanoSeconds, sc.Memory.WorkingSetBytes)
			if float64(sc.Memory.WorkingSetBytes) < 0.95*float64(p.Memory.WorkingSetBytes) {
				t.Errorf("the summary's pods cgroup (working set %d) holds less than the VM pod (%d): the VM does not count against allocatable", sc.Memory.WorkingSetBytes, p.Memory.WorkingSetBytes)
			}
		}
	}
	if !found {
		t.Errorf("no pods system container in the summary")
	}
}
