package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The host's cgroups, read the way the kernel shows them; the tests check
// vmpod's placement with nothing of vmpod's own code.
const cgroupRoot = "/sys/fs/cgroup"

// hostHierarchies lists the cgroup v1 hierarchies (directories under
// cgroupRoot holding cgroup.procs, symlinks skipped), "unified" included
// on a hybrid host. It skips the test on a cgroup v2 host: these tests
// are written for this project's v1 machines (pkg/cgroups unit-tests v2).
func hostHierarchies(t *testing.T) []string {
	t.Helper()
	hiers := v1Hierarchies(t)
	if hiers == nil {
		t.Skip("cgroup v2 host: this e2e test is for cgroup v1 (hybrid) hosts")
	}
	return hiers
}

// v1Hierarchies is hostHierarchies, nil on a cgroup v2 host.
func v1Hierarchies(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return nil
	}
	ents, err := os.ReadDir(cgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(cgroupRoot, e.Name(), "cgroup.procs")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// podCgroups makes pod cgroups under a test-unique top cgroup in every
// hierarchy, as the kubelet's cgroupfs driver makes a pod's, and removes
// them at the end (vmpod must have removed its own below them).
func podCgroups(t *testing.T, hiers []string, pods ...string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	top := "/vmpod-e2e-" + hex.EncodeToString(b)
	for _, h := range hiers {
		for _, p := range pods {
			if err := os.MkdirAll(filepath.Join(cgroupRoot, h, top, p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		for _, h := range hiers {
			for _, p := range pods {
				d := filepath.Join(cgroupRoot, h, top, p)
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if e.IsDir() {
						os.Remove(filepath.Join(d, e.Name())) // left by a failed test
					}
				}
				os.Remove(d)
			}
			os.Remove(filepath.Join(cgroupRoot, h, top))
		}
	})
	return top
}

// threadCgroups reads where each thread of pid is: by thread ID, the
// cgroup path by hierarchy directory ("systemd" for name=systemd,
// "unified" for the unified hierarchy).
func threadCgroups(t *testing.T, pid string, hiers []string) map[string]map[string]string {
	t.Helper()
	dirOf := map[string]string{"": "unified", "name=systemd": "systemd"}
	for _, h := range hiers {
		for _, c := range strings.Split(h, ",") {
			dirOf[c] = h
		}
	}
	tasks, err := os.ReadDir(filepath.Join("/proc", pid, "task"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, task := range tasks {
		f, err := os.Open(filepath.Join("/proc", pid, "task", task.Name(), "cgroup"))
		if err != nil {
			continue // the thread ended
		}
		m := map[string]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) == 3 {
				first, _, _ := strings.Cut(parts[1], ",")
				m[dirOf[first]] = parts[2]
			}
		}
		f.Close()
		out[task.Name()] = m
	}
	return out
}

// outside lists the threads of pid not in cgroup path, in any hierarchy
// but devices (libvirt's device cgroup keeps confining QEMU).
func outside(t *testing.T, pid, path string, hiers []string) []string {
	t.Helper()
	var out []string
	for tid, m := range threadCgroups(t, pid, hiers) {
		for _, h := range hiers {
			if h != "devices" && m[h] != path {
				out = append(out, fmt.Sprintf("%s in %s:%s", tid, h, m[h]))
			}
		}
	}
	return out
}

// cgroupFile reads a file of cgroup path in hierarchy h.
func cgroupFile(t *testing.T, h, path, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cgroupRoot, h, path, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cgroupStat reads one key of a cgroup's flat keyed file (memory.stat,
// memory.oom_control).
func cgroupStat(t *testing.T, h, path, file, key string) uint64 {
	t.Helper()
	for _, l := range strings.Split(cgroupFile(t, h, path, file), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	t.Fatalf("%s has no %s", file, key)
	return 0
}

// wantLimits checks the VM cgroup's limit files.
func wantLimits(t *testing.T, path string, files map[string]string) {
	t.Helper()
	for f, want := range files {
		h, _, _ := strings.Cut(f, ".")
		if h == "cpuacct" {
			h = "cpu"
		}
		if got := cgroupFile(t, h, path, f); got != want {
			t.Errorf("%s of %s = %s, want %s", f, path, got, want)
		}
	}
}

// qemuOwnFigures are QEMU's own CPU time (utime+stime), resident memory
// (file pages too) and private resident memory (RssAnon + RssShmem),
// from /proc.
func qemuOwnFigures(t *testing.T, pid string) (cpuNs, rssBytes, privateBytes uint64) {
	t.Helper()
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	kb := func(key string) uint64 {
		m := regexp.MustCompile(key + `:\s+(\d+) kB`).FindStringSubmatch(string(status))
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n << 10
	}
	return (utime + stime) * uint64(time.Second/100), kb("VmRSS"), kb("RssAnon") + kb("RssShmem")
}

// libvirtCharge reads what libvirt's memory cgroup of a placed VM (one
// of the placement's Libvirt directories) is still charged: all of it,
// and its anonymous and shared memory pages, which QEMU allocated before
// it moved and still holds (they are in QEMU's RssAnon + RssShmem, not
// in the pod's cgroup).
func libvirtCharge(t *testing.T, dirs []string) (usage, private uint64) {
	t.Helper()
	for _, d := range dirs {
		if rel, ok := strings.CutPrefix(d, filepath.Join(cgroupRoot, "memory")+"/"); ok {
			usage, _ = strconv.ParseUint(cgroupFile(t, "memory", rel, "memory.usage_in_bytes"), 10, 64)
			return usage, cgroupStat(t, "memory", rel, "memory.stat", "total_rss") + cgroupStat(t, "memory", rel, "memory.stat", "total_shmem")
		}
	}
	t.Fatalf("no memory cgroup of libvirt's among %q", dirs)
	return 0, 0
}

// criStats are crictl stats' figures for one container.
func (e *vmEnv) criStats(t *testing.T, ctrID string) (cpuNs, workingSet uint64, sampled time.Time) {
	t.Helper()
	var v struct {
		Stats []struct {
			CPU struct {
				Timestamp            string
				UsageCoreNanoSeconds struct{ Value string }
			}
			Memory struct {
				WorkingSetBytes struct{ Value string }
			}
		}
	}
	if err := json.Unmarshal([]byte(e.mustCrictl("stats", "-o", "json", "--id", ctrID)), &v); err != nil || len(v.Stats) != 1 {
		t.Fatalf("crictl stats: %v %+v", err, v)
	}
	cpuNs, _ = strconv.ParseUint(v.Stats[0].CPU.UsageCoreNanoSeconds.Value, 10, 64)
	workingSet, _ = strconv.ParseUint(v.Stats[0].Memory.WorkingSetBytes.Value, 10, 64)
	ts, _ := strconv.ParseInt(v.Stats[0].CPU.Timestamp, 10, 64)
	return cpuNs, workingSet, time.Unix(0, ts)
}

// within says whether a is within frac of b.
func within(a, b uint64, frac float64) bool {
	d := float64(a) - float64(b)
	return d <= frac*float64(b) && -d <= frac*float64(b)
}

// TestCgroupPlacement: a VM pod with a cgroup_parent runs with every QEMU
// thread in <cgroup_parent>/vmpod-<container ID>, with guest RAM plus
// the pod's overhead as memory limit and the container's CPU limits;
// UpdateContainerResources and UpdatePodSandboxResources change them;
// the stats are the cgroup's; a thread taken out is put back after vmpod
// is killed and after libvirtd restarts; a VM going over its memory
// limit is OOM-killed and reported OOMKilled; removal leaves no cgroup,
// not even libvirt's, which a restarted libvirtd forgets.
func TestCgroupPlacement(t *testing.T) {
	hiers := hostHierarchies(t)
	// Before the env: its cleanup (the pods' removal) runs first.
	top := podCgroups(t, hiers, "pod-vm", "pod-oom")
	e := newVMEnv(t)
	vmParent, oomParent := top+"/pod-vm", top+"/pod-oom"

	// The VM: 300Mi guest RAM, one CPU, shares 512, 256Mi overhead (QEMU
	// and its 256 MiB TCG translation cache). The OOM VM: 256Mi guest
	// RAM with only 48Mi on top. Both boot together.
	pod := func(name, parent string, guest, overhead int64, cpu map[string]any) podFiles {
		f := e.podConfigsWith(name, 0, nil, map[string]any{"linux": map[string]any{
			"cgroup_parent": parent, "overhead": map[string]any{"memory_limit_in_bytes": overhead},
		}})
		res := map[string]any{"memory_limit_in_bytes": guest}
		for k, v := range cpu {
			res[k] = v
		}
		e.editCtr(f, func(c map[string]any) { c["linux"] = map[string]any{"resources": res} })
		return f
	}
	f := pod("cg", vmParent, 300<<20, 256<<20, map[string]any{"cpu_quota": 100000, "cpu_period": 100000, "cpu_shares": 512})
	fo := pod("oom", oomParent, 256<<20, 48<<20, nil)
	podID, ctrID := e.startVM(f)
	ci := e.inspect(ctrID)
	dom := ci.Info.Domain
	pid := qemuPID(t, dom)
	oomPod, oomCtr := e.startVM(fo)
	vmPath, oomPath := vmParent+"/vmpod-"+ctrID, oomParent+"/vmpod-"+oomCtr
	// What QEMU used before it was placed (starting up) is not the pod
	// cgroup's: vmpod recorded its CPU time then and the memory left
	// charged to libvirt's cgroup of the VM.
	pl := ci.Info.Cgroup
	if pl == nil || pl.Path != vmPath || len(pl.Libvirt) == 0 {
		t.Fatalf("crictl inspect's placement: %+v, want %s and libvirt's cgroups QEMU left", pl, vmPath)
	}
	if cpu, _, _ := qemuOwnFigures(t, pid); pl.StartCPUNs == 0 || pl.StartCPUNs > cpu {
		t.Errorf("QEMU's CPU time before its placement recorded as %d ns; it has used %d ns since it started", pl.StartCPUNs, cpu)
	}
	t.Logf("before its placement QEMU used %d ns of CPU and %d bytes of memory (charged to libvirt's cgroup)", pl.StartCPUNs, pl.StartMemoryBytes)

	// Every thread, in every hierarchy but devices.
	if out := outside(t, pid, vmPath, hiers); len(out) > 0 {
		t.Fatalf("QEMU threads outside %s: %v", vmPath, out)
	}
	t.Logf("QEMU (pid %s): %d threads in %s in %d hierarchies", pid, len(threadCgroups(t, pid, hiers)), vmPath, len(hiers)-1)
	if m := regexp.MustCompile(`VM placed in its pod's cgroup.*took=(\S+)`).FindStringSubmatch(e.Log()); m != nil {
		t.Logf("placement took %s of StartContainer", m[1])
	}
	// QEMU (libvirt-qemu) cannot lift its own limits: the cgroup is
	// root's, its files writable by root only.
	for _, p := range []string{filepath.Join(cgroupRoot, "memory", vmPath), filepath.Join(cgroupRoot, "memory", vmPath, "memory.limit_in_bytes"), filepath.Join(cgroupRoot, "cpu", vmPath, "cgroup.procs")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s is owned by %d with mode %v: not root's alone", p, sys.Uid, st.Mode())
		}
	}
	wantLimits(t, vmPath, map[string]string{
		"memory.limit_in_bytes": strconv.Itoa(556 << 20), "memory.memsw.limit_in_bytes": strconv.Itoa(556 << 20),
		"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000", "cpu.shares": "512",
	})

	// Updates: the container's CPU limits, the pod's overhead.
	e.mustCrictl("update", "--cpu-quota", "50000", "--cpu-period", "100000", "--cpu-share", "256", ctrID)
	rt := runtimeClient(t, e.Socket())
	if _, err := rt.UpdatePodSandboxResources(context.Background(), &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: podID, Overhead: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 300 << 20},
	}); err != nil {
		t.Fatal(err)
	}
	wantLimits(t, vmPath, map[string]string{"memory.limit_in_bytes": strconv.Itoa(600 << 20), "cpu.cfs_quota_us": "50000", "cpu.shares": "256"})

	// Over its limit: the OOM VM fills its RAM (the guest's root is a
	// RAM file system) and the kernel kills its QEMU.
	waitLog(t, fo.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), bootTimeout)
	// (The exec fails: its VM is gone before it ends.)
	e.crictl("exec", "-s", "--timeout", "60", oomCtr, "sh", "-c", "mkdir -p /fill && mount -t tmpfs -o size=400m fill /fill && dd if=/dev/zero of=/fill/zero bs=1M count=250")
	oi := e.waitState(oomCtr, "CONTAINER_EXITED", 60*time.Second)
	if oi.Status.Reason != "OOMKilled" || oi.Status.ExitCode != 137 || !strings.Contains(oi.Status.Message, "memory limit of "+strconv.Itoa(304<<20)) {
		t.Errorf("the VM over its memory limit exited %d %s %q, want 137 OOMKilled", oi.Status.ExitCode, oi.Status.Reason, oi.Status.Message)
	}
	if n := cgroupStat(t, "memory", oomPath, "memory.oom_control", "oom_kill"); n != 1 {
		t.Errorf("OOM kills in %s: %d", oomPath, n)
	}
	t.Logf("OOM VM: %s (peak %s bytes in its cgroup)", oi.Status.Message, cgroupFile(t, "memory", oomPath, "memory.max_usage_in_bytes"))

	// The stats are the cgroup's, and close to QEMU's own figures. They
	// come from the stats collector's samples (every stats_interval, 1s):
	// after 2.5 s the sample must postdate the first read.
	waitLog(t, f.logPath, readyRE, bootTimeout)
	before := time.Now()
	cgCPU0, _ := strconv.ParseUint(cgroupFile(t, "cpuacct", vmPath, "cpuacct.usage"), 10, 64)
	time.Sleep(2500 * time.Millisecond)
	criCPU, criWS, sampled := e.criStats(t, ctrID)
	cgCPU1, _ := strconv.ParseUint(cgroupFile(t, "cpuacct", vmPath, "cpuacct.usage"), 10, 64)
	if !sampled.After(before) || time.Since(sampled) > 5*time.Second {
		t.Errorf("the CRI stats were sampled at %v, want after %v and within stats_max_age (5 s)", sampled, before)
	}
	usage, _ := strconv.ParseUint(cgroupFile(t, "memory", vmPath, "memory.usage_in_bytes"), 10, 64)
	cgWS := usage - cgroupStat(t, "memory", vmPath, "memory.stat", "total_inactive_file")
	qCPU, qRSS, qPrivate := qemuOwnFigures(t, pid)
	lvUsage, lvPrivate := libvirtCharge(t, pl.Libvirt)
	t.Logf("CPU: CRI %d ns, cgroup %d..%d ns, QEMU's own %d ns (%d ns before it was placed); memory: CRI working set %d, cgroup %d, QEMU RSS %d (private %d, of which %d still charged to libvirt's cgroup, which holds %d in all)",
		criCPU, cgCPU0, cgCPU1, qCPU, pl.StartCPUNs, criWS, cgWS, qRSS, qPrivate, lvPrivate, lvUsage)
	if criCPU < cgCPU0 || criCPU > cgCPU1 || !within(criWS, cgWS, 0.05) {
		t.Errorf("CRI stats (CPU %d, working set %d) are not the cgroup's (CPU %d..%d, working set %d)", criCPU, criWS, cgCPU0, cgCPU1, cgWS)
	}
	// Like with like: the cgroup counts from the move on.
	if !within(criCPU, qCPU-pl.StartCPUNs, 0.10) {
		t.Errorf("CRI CPU %d ns is not within 10%% of QEMU's own since it was placed (%d ns)", criCPU, qCPU-pl.StartCPUNs)
	}
	if !within(criWS, qPrivate-lvPrivate, 0.10) {
		t.Errorf("CRI working set %d is not within 10%% of QEMU's private memory charged since it was placed (%d)", criWS, qPrivate-lvPrivate)
	}
	// What stays in libvirt's cgroup only shrinks: the recorded figure
	// bounds it.
	if lvUsage > pl.StartMemoryBytes {
		t.Errorf("libvirt's cgroup of the VM holds %d bytes, more than the %d recorded at the placement", lvUsage, pl.StartMemoryBytes)
	}

	// vmpod killed; a thread taken out meanwhile (as libvirt could) is
	// back once vmpod recovered. The thread is the vCPU's, which lives as
	// long as QEMU (QEMU's worker threads come and go).
	e.Kill()
	tid := func() string {
		for tid := range threadCgroups(t, pid, hiers) {
			if comm, _ := os.ReadFile(filepath.Join("/proc", pid, "task", tid, "comm")); strings.HasPrefix(string(comm), "CPU 0/") {
				return tid
			}
		}
		t.Fatal("QEMU has no vCPU 0 thread")
		return ""
	}()
	takeOut := func(hier string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(cgroupRoot, hier, "tasks"), []byte(tid), 0o644); err != nil {
			t.Fatal(err)
		}
		if len(outside(t, pid, vmPath, hiers)) == 0 {
			t.Fatalf("vCPU thread %s was not taken out of %s", tid, hier)
		}
	}
	takeOut("cpu")
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	waitPlaced := func(why string) {
		t.Helper()
		start := time.Now()
		for len(outside(t, pid, vmPath, hiers)) > 0 {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("%s: QEMU threads outside %s: %v\n%s", why, vmPath, outside(t, pid, vmPath, hiers), e.LogTail(40))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: the thread was back after %v", why, time.Since(start).Round(10*time.Millisecond))
	}
	waitPlaced("after vmpod's restart")

	// libvirtd restarts (and forgets the cgroups it made for QEMU); a
	// thread taken out meanwhile is back once vmpod reconnected, and an
	// update still works (libvirt could no longer set cputune).
	lpid := libvirtdPID(t)
	ensureLibvirtd(t, lpid)
	syscall.Kill(lpid, syscall.SIGTERM)
	for i := 0; syscall.Kill(lpid, 0) == nil; i++ {
		if i > 300 {
			t.Fatal("libvirtd did not exit within 30 s of SIGTERM")
		}
		time.Sleep(100 * time.Millisecond)
	}
	takeOut("memory")
	startLibvirtd(t)
	waitPlaced("after libvirtd's restart")
	e.mustCrictl("update", "--cpu-quota", "70000", "--cpu-period", "100000", ctrID)
	wantLimits(t, vmPath, map[string]string{"cpu.cfs_quota_us": "70000", "memory.limit_in_bytes": strconv.Itoa(600 << 20)})
	if qemuPID(t, dom) != pid {
		t.Fatal("QEMU changed")
	}

	// Removal: no cgroup of the VMs left, libvirt's forgotten ones
	// included.
	for _, p := range []string{podID, oomPod} {
		e.mustCrictl("stopp", p)
		e.mustCrictl("rmp", p)
	}
	for _, h := range hiers {
		for _, p := range []string{vmPath, oomPath} {
			if _, err := os.Stat(filepath.Join(cgroupRoot, h, p)); !os.IsNotExist(err) {
				t.Errorf("%s left in %s: %v", p, h, err)
			}
		}
		left, _ := filepath.Glob(filepath.Join(cgroupRoot, h, "machine", "qemu-*-"+dom[:min(len(dom), 20)]+"*"))
		if len(left) > 0 {
			t.Errorf("libvirt's cgroups of the VM left: %v", left)
		}
	}
}
