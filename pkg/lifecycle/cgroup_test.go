package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
	"github.com/vmpod/vmpod/pkg/store"
)

const podCgroup = "/kubepods/burstable/pod1b2c"

// placedPod is a pod in podCgroup with the RuntimeClass overhead given
// (0: none), and a container with a 512Mi memory limit and half a CPU.
func placedPod(name string, overhead int64) (*runtimeapi.PodSandboxConfig, *runtimeapi.ContainerConfig) {
	p := pod(name)
	p.Linux = &runtimeapi.LinuxPodSandboxConfig{CgroupParent: podCgroup}
	if overhead > 0 {
		p.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: overhead, CpuQuota: 10000, CpuPeriod: 100000}
	}
	c := ctr("vm")
	c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 512 << 20, CpuQuota: 50000, CpuPeriod: 100000, CpuShares: 512,
	}}
	return p, c
}

// startPlaced runs a placed pod's VM and returns the sandbox and container
// IDs.
func startPlaced(t *testing.T, e *lifecycletest.Env, name string, overhead int64) (string, string) {
	t.Helper()
	ctx := lifecycletest.Ctx(t)
	p, c := placedPod(name, overhead)
	sbID, err := e.Pods.RunSandbox(ctx, p, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return sbID, id
}

func vmPath(id string) string { return podCgroup + "/vmpod-" + id }

// TestStartPlacesVM: the VM's QEMU goes into <pod cgroup>/vmpod-<id> with
// guest RAM plus the RuntimeClass's overhead and the container's CPU
// limits, and libvirt's cputune is not what limits it.
func TestStartPlacesVM(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	_, id := startPlaced(t, e, "placed", 100<<20)
	rec := e.Record(t, id)
	pid, err := e.LV.QEMUPID(context.Background(), rec.Domain)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := e.Cgroups.Placed()[vmPath(id)]
	if !ok || got.PID != pid {
		t.Fatalf("placed %+v, want pid %d in %s", e.Cgroups.Placed(), pid, vmPath(id))
	}
	want := cgroups.Limits{MemoryBytes: 612 << 20, CPUShares: 512, CPUQuotaUS: 50000, CPUPeriodUS: 100000}
	if got.Placement.Limits != want {
		t.Errorf("limits %+v, want %+v", got.Placement.Limits, want)
	}
	if rec.Cgroup == nil || rec.Cgroup.Path != vmPath(id) || rec.Cgroup.Parent != podCgroup || len(rec.Cgroup.Libvirt) != 1 {
		t.Errorf("record's placement %+v", rec.Cgroup)
	}
	if rec.State != lifecycle.ContainerRunning || e.DomainState(t, rec.Domain).State.String() != "running" {
		t.Errorf("state %s, domain %v", rec.State, e.DomainState(t, rec.Domain))
	}
	// The placement as applied, with what QEMU used before it, is kept
	// and shown in the verbose status (the tests compare QEMU's own
	// figures with the pod's through it).
	info, err := e.Pods.ContainerInfo(lifecycletest.Ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := info["cgroup"].(*cgroups.Placement); !ok || p.Path != vmPath(id) ||
		p.StartCPUNs != lifecycletest.StartCPUNs || p.StartMemoryBytes != lifecycletest.StartMemoryBytes || p.Limits != want {
		t.Errorf("verbose info's cgroup: %#v", info["cgroup"])
	}

	// Without a RuntimeClass overhead: the handler's vm_memory_overhead
	// plus, under TCG, the translation cache.
	_, id2 := startPlaced(t, e, "no-overhead", 0)
	if l := e.Cgroups.Placed()[vmPath(id2)].Placement.Limits; l.MemoryBytes != (512+64+1024)<<20 {
		t.Errorf("memory limit without overhead %d, want guest RAM + 64Mi + the 1024 MiB TB cache", l.MemoryBytes)
	}
}

// TestStartPlacementFails: a VM that cannot be placed does not run: the
// start fails, the domain is destroyed, the cgroup removed and the
// container stays CREATED for another start.
func TestStartPlacementFails(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	p, c := placedPod("fail", 0)
	sbID, err := e.Pods.RunSandbox(ctx, p, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, c)
	if err != nil {
		t.Fatal(err)
	}
	e.Cgroups.FailNext("Apply", errors.New("injected: cgroup.procs: permission denied"))
	if err := e.Pods.StartContainer(ctx, id); err == nil || !strings.Contains(err.Error(), "pod's cgroup") {
		t.Fatalf("start with a failing placement: %v", err)
	}
	rec := e.Record(t, id)
	if rec.State != lifecycle.ContainerCreated || rec.Cgroup != nil || e.DomainState(t, rec.Domain).State.String() != "shutoff" {
		t.Fatalf("after the failed start: %s, cgroup %+v, domain %v", rec.State, rec.Cgroup, e.DomainState(t, rec.Domain))
	}
	if calls := e.Cgroups.Calls(); !slices.Contains(calls, "Remove "+vmPath(id)) {
		t.Errorf("the planned cgroup was not removed: %v", calls)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if _, ok := e.Cgroups.Placed()[vmPath(id)]; !ok {
		t.Errorf("not placed on the second start")
	}
}

// TestCgroupParentRefused: a cgroup_parent of the wrong driver's form, or
// any when the node's cgroups are unusable, is refused by RunPodSandbox,
// which leaves nothing.
func TestCgroupParentRefused(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	p, _ := placedPod("slice", 0)
	p.Linux.CgroupParent = "kubepods-burstable-pod1b2c.slice"
	if _, err := e.Pods.RunSandbox(ctx, p, ""); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "cgroupDriver") {
		t.Errorf("a systemd slice with the cgroupfs driver: %v", err)
	}
	p.Linux.CgroupParent = "/kubepods/../../etc"
	if _, err := e.Pods.RunSandbox(ctx, p, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a parent leaving the cgroup tree: %v", err)
	}
	e.Cgroups = nil
	e.Pods = e.NewPods()
	p.Linux.CgroupParent = podCgroup
	if _, err := e.Pods.RunSandbox(ctx, p, ""); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "/sys/fs/cgroup") {
		t.Errorf("a cgroup_parent without usable cgroups: %v", err)
	}
	if recs := e.SandboxRecords(t); len(recs) != 0 {
		t.Errorf("sandboxes left: %+v", recs)
	}
	// A pod without a cgroup_parent still runs (in libvirt's cgroup).
	if _, err := e.Pods.RunSandbox(ctx, pod("plain"), ""); err != nil {
		t.Errorf("a pod without a cgroup_parent: %v", err)
	}
}

// TestOOMKilledExit: a VM whose QEMU the kernel OOM-killed in its cgroup
// exits OOMKilled (137) with the limit in the message; a crash without
// OOM kills stays a crash, a guest poweroff stays Completed.
func TestOOMKilledExit(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	for _, tc := range []struct {
		name     string
		oom      uint64
		poweroff bool
		code     int32
		reason   string
		msgHas   string
	}{
		{"oom", 1, false, 137, lifecycle.ReasonOOMKilled, "memory limit of 641728512 bytes (guest RAM 536870912 + overhead 104857600)"},
		{"crash", 0, false, 139, "Crashed", "crashed"},
		{"poweroff", 1, true, 0, "Completed", "powered off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, id := startPlaced(t, e, tc.name, 100<<20)
			rec := e.Record(t, id)
			e.Cgroups.SetOOMKills(vmPath(id), tc.oom)
			if tc.poweroff {
				e.LV.GuestPowerOff(rec.Domain)
			} else {
				e.LV.Crash(rec.Domain)
			}
			v, err := e.Pods.Container(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != lifecycle.ContainerExited || v.ExitCode != tc.code || v.Reason != tc.reason || !strings.Contains(v.Message, tc.msgHas) {
				t.Errorf("exit %s %d %s %q", v.State, v.ExitCode, v.Reason, v.Message)
			}
		})
	}
}

// TestUpdatesChangeCgroupLimits: UpdateContainerResources and
// UpdatePodSandboxResources change a placed VM's limits in its cgroup,
// not through libvirt.
func TestUpdatesChangeCgroupLimits(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, id := startPlaced(t, e, "upd", 100<<20)
	before := len(e.LV.Calls())
	err := e.Pods.UpdateContainerResources(ctx, id, &runtimeapi.LinuxContainerResources{CpuQuota: 80000, CpuPeriod: 100000, CpuShares: 1024, MemoryLimitInBytes: 512 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := cgroups.Limits{MemoryBytes: 612 << 20, CPUShares: 1024, CPUQuotaUS: 80000, CPUPeriodUS: 100000}
	if l := e.Cgroups.Placed()[vmPath(id)].Placement.Limits; l != want {
		t.Errorf("after UpdateContainerResources %+v, want %+v", l, want)
	}
	if rec := e.Record(t, id); rec.Cgroup.Limits != want {
		t.Errorf("record's limits %+v", rec.Cgroup.Limits)
	}
	if calls := e.CallsSince(before); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "SetCPUTune") }) {
		t.Errorf("libvirt's cputune set for a placed VM: %v", calls)
	}
	// The pod's overhead grows: the VM's memory limit with it.
	if err := e.Pods.UpdateSandboxResources(ctx, sbID, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 300 << 20}, nil); err != nil {
		t.Fatal(err)
	}
	if l := e.Cgroups.Placed()[vmPath(id)].Placement.Limits; l.MemoryBytes != 812<<20 || l.CPUQuotaUS != 80000 {
		t.Errorf("after UpdatePodSandboxResources %+v", l)
	}
	var sbRec lifecycle.SandboxRecord
	if err := e.Meta.Get(store.Sandboxes, sbID, &sbRec); err != nil || !strings.Contains(string(sbRec.Overhead), "314572800") {
		t.Errorf("overhead not recorded: %s %v", sbRec.Overhead, err)
	}
	// A refused change leaves everything.
	e.Cgroups.FailNext("SetLimits", errors.New("injected: memory.limit_in_bytes: "+errdefs.ErrFailedPrecondition.Error()))
	if err := e.Pods.UpdateSandboxResources(ctx, sbID, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 20}, nil); err == nil {
		t.Error("a failed limit change succeeded")
	}
	if l := e.Cgroups.Placed()[vmPath(id)].Placement.Limits; l.MemoryBytes != 812<<20 {
		t.Errorf("limits after a failed change %+v", l)
	}
	for _, tc := range []struct {
		id   string
		o    *runtimeapi.LinuxContainerResources
		want error
	}{
		{"nope", &runtimeapi.LinuxContainerResources{}, errdefs.ErrNotFound},
		{sbID, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}, errdefs.ErrInvalidArgument},
		{sbID, nil, nil},
	} {
		if err := e.Pods.UpdateSandboxResources(ctx, tc.id, tc.o, nil); !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
			t.Errorf("UpdateSandboxResources(%q, %v): %v, want %v", tc.id, tc.o, err, tc.want)
		}
	}
}

// TestStatsFromCgroups: a placed VM's CPU and memory are its cgroup's,
// its pod's are the pod cgroup's.
func TestStatsFromCgroups(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, id := startPlaced(t, e, "stats", 0)
	e.Cgroups.SetUsage(vmPath(id), cgroups.Usage{CPUNs: 7e9, MemoryBytes: 300 << 20, WorkingSetBytes: 280 << 20, RSSBytes: 250 << 20})
	e.Cgroups.SetUsage(podCgroup, cgroups.Usage{CPUNs: 8e9, MemoryBytes: 310 << 20, WorkingSetBytes: 290 << 20})
	cs, err := e.Pods.ContainerStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Running || cs.CPUTimeNs != 7e9 || cs.WorkingSetBytes != 280<<20 || cs.UsageBytes != 300<<20 || cs.RSSBytes != 250<<20 || cs.CgroupUsage == nil {
		t.Errorf("container stats %+v", cs)
	}
	ps, err := e.Pods.SandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	if ps.CPUTimeNs != 8e9 || ps.WorkingSetBytes != 290<<20 || ps.CgroupUsage == nil {
		t.Errorf("pod stats %+v", ps)
	}
	// An unreadable cgroup falls back to libvirt's figures.
	e.Cgroups.FailNext("Stats", errors.New("injected"))
	e.Pods.SampleStats(ctx)
	if cs, err := e.Pods.ContainerStats(ctx, id); err != nil || cs.CgroupUsage != nil || cs.CPUTimeNs != 1e9 {
		t.Errorf("fallback: %+v, %v", cs, err)
	}
}

// TestPlacementChecked: recovery after a restart and the monitor's
// periodic check verify each running VM's placement; removal removes the
// cgroup.
func TestPlacementChecked(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, id := startPlaced(t, e, "chk", 0)
	e.Cgroups.SetStray(vmPath(id), 2)
	e.Restart(t)
	if err := e.Pods.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	verifies := func() int {
		n := 0
		for _, c := range e.Cgroups.Calls() {
			if c == "Verify "+vmPath(id) {
				n++
			}
		}
		return n
	}
	if verifies() != 1 {
		t.Fatalf("recovery did not verify the placement: %v", e.Cgroups.Calls())
	}
	e.Pods.CheckRunning(ctx)
	if verifies() != 2 {
		t.Fatalf("the periodic check did not verify the placement: %v", e.Cgroups.Calls())
	}
	// libvirtd down (restarting, or busy reconnecting to its QEMUs): the
	// placement is checked all the same, it needs no libvirtd.
	e.LV.SetDown(true)
	e.Pods.CheckRunning(ctx)
	e.LV.SetDown(false)
	if verifies() != 3 {
		t.Fatalf("the periodic check with libvirtd down did not verify the placement: %v", e.Cgroups.Calls())
	}
	if err := e.Pods.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if len(e.Cgroups.Placed()) != 0 {
		t.Errorf("cgroup left after RemoveContainer: %+v", e.Cgroups.Placed())
	}
}

// TestRecoveryMidStart: vmpod died after placing the VM but before it was
// RUNNING: recovery stops the domain, removes the cgroup and forgets it,
// and the next start places the VM again.
func TestRecoveryMidStart(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, id := startPlaced(t, e, "mid", 0)
	rec := e.Record(t, id)
	rec.State, rec.StartedAt = lifecycle.ContainerCreated, 0
	if err := e.Meta.Put(store.Containers, id, rec); err != nil {
		t.Fatal(err)
	}
	e.Restart(t)
	if err := e.Pods.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	rec = e.Record(t, id)
	if rec.State != lifecycle.ContainerCreated || rec.Cgroup != nil || len(e.Cgroups.Placed()) != 0 || e.DomainState(t, rec.Domain).State.String() != "shutoff" {
		t.Fatalf("after recovery: %s, cgroup %+v, placed %+v, domain %v", rec.State, rec.Cgroup, e.Cgroups.Placed(), e.DomainState(t, rec.Domain))
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Cgroups.Placed()[vmPath(id)]; !ok {
		t.Error("not placed again")
	}
}
