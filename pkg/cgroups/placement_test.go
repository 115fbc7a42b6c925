package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

const (
	qemuPID = 4242
	podPath = "/kubepods/burstable/pod1b2c"
	ctrID   = "c0ffee"
)

// libvirtCgroup is where libvirt (without systemd) puts a QEMU thread:
// emulator threads and vCPU threads in sub-cgroups of its domain's.
func libvirtCgroup(tid int, hier string) string {
	switch hier {
	case "devices", "systemd", "pids":
		return "/"
	}
	d := "/machine/qemu-7-vmpod-c0ffee.libvirt-qemu"
	if hier == "memory" || hier == "freezer" {
		return d
	}
	if tid == qemuPID+3 {
		return d + "/vcpu0"
	}
	return d + "/emulator"
}

var qemuThreads = []int{qemuPID, qemuPID + 1, qemuPID + 2, qemuPID + 3}

// libvirtDirs makes libvirt's domain cgroups the threads start in.
func libvirtDirs(t *testing.T, root string, hiers []string) {
	for _, hier := range hiers {
		for _, sub := range []string{"", "/emulator", "/vcpu0"} {
			if err := os.MkdirAll(filepath.Join(root, hier, "machine/qemu-7-vmpod-c0ffee.libvirt-qemu"+sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestApplyV1Hybrid(t *testing.T) {
	testMode(t)
	root := v1Root(t, true)
	v1Pod(t, root, podPath)
	h, err := Open(Options{Root: root, Driver: DriverCgroupfs})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, libvirtCgroup)
	libvirtDirs(t, root, []string{"cpu,cpuacct", "cpuset", "memory", "freezer", "unified"})
	// What QEMU allocated before the move stays charged there.
	write(t, root, "memory/machine/qemu-7-vmpod-c0ffee.libvirt-qemu/memory.usage_in_bytes", "19922944\n")
	p, err := h.Plan(podPath, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	v1NewCgroupFiles(t, root, p.Path)
	p.Limits = Limits{MemoryBytes: 576 << 20, CPUShares: 1024, CPUQuotaUS: 50000, CPUPeriodUS: 100000}
	got, err := h.Apply(p, qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cpu,cpuacct", "cpuset", "freezer", "memory", "pids", "systemd", "unified"}
	if !slices.Equal(got.Hierarchies, want) {
		t.Errorf("joined %q, want %q", got.Hierarchies, want)
	}
	// Every thread in the VM's cgroup in every hierarchy but devices.
	for _, tid := range qemuThreads {
		for _, hier := range want {
			if w := k.where(qemuPID, tid, hier); w != p.Path {
				t.Errorf("thread %d in %s: %s, want %s", tid, hier, w, p.Path)
			}
		}
		if w := k.where(qemuPID, tid, "devices"); w != "/" {
			t.Errorf("thread %d left libvirt's devices cgroup: %s", tid, w)
		}
	}
	for file, want := range map[string]string{
		"memory" + p.Path + "/memory.limit_in_bytes":       "603979776",
		"memory" + p.Path + "/memory.memsw.limit_in_bytes": "603979776",
		"cpu,cpuacct" + p.Path + "/cpu.shares":             "1024",
		"cpu,cpuacct" + p.Path + "/cpu.cfs_quota_us":       "50000",
		"cpu,cpuacct" + p.Path + "/cpu.cfs_period_us":      "100000",
		"cpuset" + p.Path + "/cpuset.cpus":                 "0-1",
		"cpuset" + p.Path + "/cpuset.mems":                 "0",
		"devices" + p.Path + "/cgroup.procs":               "<missing>",
	} {
		if got := read(t, root, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	wantLibvirt := []string{}
	for _, hier := range []string{"cpu,cpuacct", "cpuset", "freezer", "memory", "unified"} {
		wantLibvirt = append(wantLibvirt, filepath.Join(root, hier, "machine/qemu-7-vmpod-c0ffee.libvirt-qemu"))
	}
	if !slices.Equal(got.Libvirt, wantLibvirt) {
		t.Errorf("libvirt's dirs %q, want %q", got.Libvirt, wantLibvirt)
	}
	if got.StartCPUNs != 5e8 || got.StartMemoryBytes != 19<<20 {
		t.Errorf("start-up usage: CPU %d, memory %d", got.StartCPUNs, got.StartMemoryBytes)
	}

	// Removal: not while QEMU runs; then the VM's cgroups and libvirt's
	// empty ones go, the pod's and the rest of libvirt's tree stay.
	if err := h.Remove(got); err == nil {
		t.Fatal("Remove succeeded with QEMU in the cgroup")
	}
	k.exit(qemuPID)
	if err := h.Remove(got); err != nil {
		t.Fatal(err)
	}
	for _, hier := range want {
		if _, err := os.Stat(filepath.Join(root, hier, p.Path)); !os.IsNotExist(err) {
			t.Errorf("%s: VM cgroup left: %v", hier, err)
		}
		if _, err := os.Stat(filepath.Join(root, hier, p.Parent)); err != nil {
			t.Errorf("%s: the pod's cgroup went too: %v", hier, err)
		}
	}
	for _, d := range got.Libvirt {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("libvirt's %s left: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "memory/machine")); err != nil {
		t.Errorf("libvirt's partition went: %v", err)
	}
	if err := h.Remove(got); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// A VM restored in place after a checkpoint is a new QEMU in new
// directories of libvirt's, placed again: the earlier QEMU's directories
// stay in the placement (a libvirtd restarted since the first move does
// not remove them when that QEMU ends), and Remove removes both; the
// start-up memory is the new QEMU's.
func TestApplyAgainKeepsEarlierLibvirtDirs(t *testing.T) {
	testMode(t)
	root := v1Root(t, false)
	v1Pod(t, root, podPath)
	h, err := Open(Options{Root: root, Driver: DriverCgroupfs})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, libvirtCgroup)
	libvirtDirs(t, root, []string{"memory"})
	p, err := h.Plan(podPath, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	v1NewCgroupFiles(t, root, p.Path)
	first, err := h.Apply(p, qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	// The save ends the first QEMU; the restore starts a second one in
	// libvirt's directories of the domain's next run.
	k.exit(qemuPID)
	const second = qemuPID + 100
	k.spawn(second, []int{second, second + 1}, func(tid int, hier string) string {
		return strings.ReplaceAll(libvirtCgroup(qemuPID, hier), "qemu-7-", "qemu-8-")
	})
	write(t, root, "memory/machine/qemu-8-vmpod-c0ffee.libvirt-qemu/memory.usage_in_bytes", "1048576\n")
	again, err := h.Apply(first, second)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range first.Libvirt {
		want = append(want, strings.ReplaceAll(d, "qemu-7-", "qemu-8-"))
	}
	want = append(want, first.Libvirt...)
	if len(first.Libvirt) == 0 || !slices.Equal(again.Libvirt, want) {
		t.Errorf("libvirt's dirs after the second placement %q, want %q", again.Libvirt, want)
	}
	newDir := filepath.Join(root, "memory/machine/qemu-8-vmpod-c0ffee.libvirt-qemu")
	oldDir := filepath.Join(root, "memory/machine/qemu-7-vmpod-c0ffee.libvirt-qemu")
	if again.StartMemoryBytes != 1<<20 {
		t.Errorf("start-up memory %d, want the second QEMU's %d", again.StartMemoryBytes, 1<<20)
	}
	k.exit(second)
	if err := h.Remove(again); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{oldDir, newDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("libvirt's %s left: %v", d, err)
		}
	}
}

// A pod cgroup that exists in no hierarchy (crictl without the kubelet):
// the VM's limits and accounting need memory, cpu, cpuacct and pids,
// made with their parents; the others are joined only where the pod has
// a cgroup.
func TestApplyV1MissingPod(t *testing.T) {
	testMode(t)
	root := v1Root(t, false)
	h, err := Open(Options{Root: root, Driver: DriverCgroupfs})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, func(int, string) string { return "/" })
	write(t, root, "freezer/handmade/cgroup.procs", "")
	p, err := h.Plan("/handmade", ctrID)
	if err != nil {
		t.Fatal(err)
	}
	p.Limits = Limits{MemoryBytes: 256 << 20}
	got, err := h.Apply(p, qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cpu,cpuacct", "freezer", "memory", "pids"}; !slices.Equal(got.Hierarchies, want) {
		t.Errorf("joined %q, want %q", got.Hierarchies, want)
	}
	if v := read(t, root, "memory/handmade/vmpod-c0ffee/memory.limit_in_bytes"); v != "268435456" {
		t.Errorf("memory limit %s", v)
	}
	// No memsw file in the new cgroup: no swap limit written.
	if v := read(t, root, "memory/handmade/vmpod-c0ffee/memory.memsw.limit_in_bytes"); v != "<missing>" {
		t.Errorf("memsw %s", v)
	}
	if v := read(t, root, "cpu,cpuacct/handmade/vmpod-c0ffee/cpu.cfs_quota_us"); v != "-1" {
		t.Errorf("no CPU limit should write quota -1, got %s", v)
	}
	if got.Libvirt != nil {
		t.Errorf("QEMU was in no libvirt cgroup, yet %q", got.Libvirt)
	}
}

func TestApplyV2(t *testing.T) {
	for _, tc := range []struct{ driver, parent, path string }{
		{DriverCgroupfs, "/kubepods/burstable/pod1b2c", "/kubepods/burstable/pod1b2c/vmpod-c0ffee"},
		{DriverSystemd, "kubepods-burstable-pod1b2c.slice", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice/vmpod-c0ffee"},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			testMode(t)
			root := v2Root(t)
			h, err := Open(Options{Root: root, Driver: tc.driver})
			if err != nil {
				t.Fatal(err)
			}
			k := newFakeKernel(h)
			k.spawn(qemuPID, qemuThreads, func(tid int, _ string) string {
				return "/machine.slice/machine-qemu\\x2d7\\x2dvmpod\\x2dc0ffee.scope/libvirt/emulator"
			})
			p, err := h.Plan(tc.parent, ctrID)
			if err != nil {
				t.Fatal(err)
			}
			if p.Path != tc.path || !slices.Equal(p.Hierarchies, []string{""}) {
				t.Fatalf("plan %+v", p)
			}
			// What the kernel gives a new cgroup, and swap enabled.
			write(t, root, tc.path+"/cgroup.controllers", "cpu memory pids\n")
			write(t, root, tc.path+"/memory.swap.max", "max\n")
			p.Limits = Limits{MemoryBytes: 600 << 20, CPUShares: 2048, CPUQuotaUS: 150000, CPUPeriodUS: 100000}
			got, err := h.Apply(p, qemuPID)
			if err != nil {
				t.Fatal(err)
			}
			for _, tid := range qemuThreads {
				if w := k.where(qemuPID, tid, ""); w != tc.path {
					t.Errorf("thread %d in %s", tid, w)
				}
			}
			files := map[string]string{
				tc.path + "/memory.max":      "629145600",
				tc.path + "/memory.swap.max": "0",
				tc.path + "/cpu.max":         "150000 100000",
				tc.path + "/cpu.weight":      "79", // 1 + (2046*9999)/262142
				tc.path + "/cpu.shares":      "<missing>",
			}
			// The controllers are enabled from the root down to the
			// pod's cgroup (the last write of each file is +pids).
			dir := ""
			for _, c := range strings.Split(tc.path, "/")[:len(strings.Split(tc.path, "/"))-1] {
				dir += c + "/"
				files[dir+"cgroup.subtree_control"] = "+pids"
			}
			for f, want := range files {
				if got := read(t, root, f); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			if got.Libvirt != nil {
				t.Errorf("systemd's machine scope is not libvirt's to remove: %q", got.Libvirt)
			}

			// An update lifts the quota and lowers the weight.
			got, err = h.SetLimits(got, Limits{MemoryBytes: 600 << 20, CPUShares: 2})
			if err != nil {
				t.Fatal(err)
			}
			if c, w := read(t, root, tc.path+"/cpu.max"), read(t, root, tc.path+"/cpu.weight"); c != "max 100000" || w != "1" {
				t.Errorf("after the update: cpu.max %q, cpu.weight %q", c, w)
			}
			if got.Limits.CPUShares != 2 {
				t.Errorf("limits not recorded: %+v", got.Limits)
			}
		})
	}
}

// On a cgroup v2 host without systemd libvirt makes one cgroup per
// domain (emulator and vCPU threads below it): QEMU's start-up memory is
// its memory.current after the move, its start-up CPU time /proc's.
func TestApplyV2StartFigures(t *testing.T) {
	testMode(t)
	root := v2Root(t)
	h, err := Open(Options{Root: root, Driver: DriverCgroupfs})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, func(tid int, _ string) string { return libvirtCgroup(tid, "cpu,cpuacct") })
	libvirt := "machine/qemu-7-vmpod-c0ffee.libvirt-qemu"
	write(t, root, libvirt+"/memory.current", "23068672\n")
	p, err := h.Plan(podPath, ctrID)
	if err != nil {
		t.Fatal(err)
	}
	// What the kernel gives a new cgroup.
	write(t, root, p.Path+"/cgroup.controllers", "cpu memory pids\n")
	write(t, root, p.Path+"/memory.max", "max\n")
	write(t, root, p.Path+"/cpu.max", "max 100000\n")
	got, err := h.Apply(p, qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(root, libvirt)}; !slices.Equal(got.Libvirt, want) {
		t.Errorf("libvirt's dirs %q, want %q", got.Libvirt, want)
	}
	if got.StartCPUNs != 5e8 || got.StartMemoryBytes != 22<<20 {
		t.Errorf("start-up usage: CPU %d, memory %d; want 5e8 and %d", got.StartCPUNs, got.StartMemoryBytes, 22<<20)
	}
}

func TestApplySystemdV1(t *testing.T) {
	testMode(t)
	root := v1Root(t, false)
	parent := "/kubepods.slice/kubepods-pod9.slice"
	v1Pod(t, root, parent)
	h, err := Open(Options{Root: root, Driver: DriverSystemd})
	if err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, libvirtCgroup)
	p, err := h.Plan("kubepods-pod9.slice", ctrID)
	if err != nil {
		t.Fatal(err)
	}
	v1NewCgroupFiles(t, root, p.Path)
	p.Limits = Limits{MemoryBytes: 1 << 30, CPUShares: 512}
	if _, err := h.Apply(p, qemuPID); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"memory" + parent + "/vmpod-c0ffee/memory.limit_in_bytes": "1073741824",
		"cpu,cpuacct" + parent + "/vmpod-c0ffee/cpu.shares":       "512",
		"systemd" + parent + "/vmpod-c0ffee/cgroup.procs":         "<missing>", // the fake kernel took the write
	} {
		if got := read(t, root, f); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if w := k.where(qemuPID, qemuPID+3, "systemd"); w != parent+"/vmpod-c0ffee" {
		t.Errorf("vCPU thread in name=systemd: %s", w)
	}
}

// Verify puts back a thread that left (libvirt moving a new thread into
// its own cgroup, say) and limits that changed.
func TestVerifyRepairs(t *testing.T) {
	testMode(t)
	root := v1Root(t, true)
	v1Pod(t, root, podPath)
	h, _ := Open(Options{Root: root, Driver: DriverCgroupfs})
	k := newFakeKernel(h)
	k.spawn(qemuPID, qemuThreads, libvirtCgroup)
	p, _ := h.Plan(podPath, ctrID)
	v1NewCgroupFiles(t, root, p.Path)
	p.Limits = Limits{MemoryBytes: 512 << 20, CPUQuotaUS: 100000, CPUPeriodUS: 100000}
	p, err := h.Apply(p, qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := h.Verify(p, qemuPID); err != nil || n != 0 {
		t.Fatalf("Verify of a placed VM: %d, %v", n, err)
	}
	k.set(qemuPID, qemuPID+3, "cpu,cpuacct", "/machine/qemu-7-vmpod-c0ffee.libvirt-qemu/vcpu0")
	k.set(qemuPID, qemuPID+2, "memory", "/machine")
	write(t, root, "memory"+p.Path+"/memory.limit_in_bytes", "9223372036854771712")
	write(t, root, "cpu,cpuacct"+p.Path+"/cpu.cfs_quota_us", "-1")
	n, err := h.Verify(p, qemuPID)
	if err != nil || n != 2 {
		t.Fatalf("Verify moved %d threads (%v), want 2", n, err)
	}
	if w := k.where(qemuPID, qemuPID+3, "cpu,cpuacct"); w != p.Path {
		t.Errorf("vCPU thread still in %s", w)
	}
	if v, q := read(t, root, "memory"+p.Path+"/memory.limit_in_bytes"), read(t, root, "cpu,cpuacct"+p.Path+"/cpu.cfs_quota_us"); v != "536870912" || q != "100000" {
		t.Errorf("limits not restored: memory %s, quota %s", v, q)
	}
	// A thread that will not stay is an error, not a loop.
	k.onMove = func(k *fakeKernel) { k.proc[qemuPID][qemuPID+1]["memory"] = "/machine" }
	k.set(qemuPID, qemuPID+1, "memory", "/machine")
	if _, err := h.Verify(p, qemuPID); !errors.Is(err, errdefs.ErrInternal) {
		t.Errorf("a thread moved back each time: %v", err)
	}
	k.onMove = nil
	delete(k.proc, qemuPID)
	if _, err := h.Verify(p, qemuPID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Verify of a gone QEMU: %v", err)
	}
}

func TestApplyFailsCleanly(t *testing.T) {
	testMode(t)
	root := v1Root(t, false)
	v1Pod(t, root, podPath)
	h, _ := Open(Options{Root: root, Driver: DriverCgroupfs})
	newFakeKernel(h) // no QEMU
	p, _ := h.Plan(podPath, ctrID)
	if _, err := h.Apply(p, qemuPID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Apply for a gone QEMU: %v", err)
	}
	if _, err := h.Apply(p, 1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Apply for pid 1: %v", err)
	}
	for _, hier := range h.hierarchies {
		if _, err := os.Stat(filepath.Join(root, hier, p.Path)); !os.IsNotExist(err) {
			t.Errorf("%s: cgroup made: %v", hier, err)
		}
	}
}

// Remove touches nothing outside the cgroup root, and only libvirt's own
// per-domain directories there.
func TestRemoveLeavesOthersAlone(t *testing.T) {
	root := v1Root(t, false)
	h, _ := Open(Options{Root: root, Driver: DriverCgroupfs})
	outside := t.TempDir()
	victim := filepath.Join(outside, "x.libvirt-qemu")
	notLibvirt := filepath.Join(root, "memory", "machine", "other")
	for _, d := range []string{victim, notLibvirt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Remove(Placement{Path: "/gone/vmpod-1", Hierarchies: []string{"memory"}, Libvirt: []string{victim, notLibvirt, root + "/memory/../../x.libvirt-qemu"}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{victim, notLibvirt} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
}
