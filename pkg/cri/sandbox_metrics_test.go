package cri

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cgroups"
)

// placedPod is lcPod in a pod cgroup with a RuntimeClass overhead.
func placedPod(name string) *runtimeapi.PodSandboxConfig {
	p := lcPod(name)
	p.Linux = &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod-" + name,
		Overhead: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}
	return p
}

// TestStatsAndMetricsFromCgroups: a VM in its pod's cgroup reports the
// cgroup's figures in the stats RPCs and in cAdvisor-named metrics whose
// descriptors match their label values.
func TestStatsAndMetricsFromCgroups(t *testing.T) {
	e := newLCEnv(t)
	pod := placedPod("web")
	sbID := e.runPod(t, pod)
	c := lcContainer("vm")
	c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20, CpuQuota: 50000, CpuPeriod: 100000, CpuShares: 512}}
	id := e.mustCreate(t, sbID, pod, c)
	e.mustStart(t, id)
	vmCg, podCg := "/kubepods/pod-web/vmpod-"+id, "/kubepods/pod-web"
	e.Cgroups.SetUsage(vmCg, cgroups.Usage{CPUNs: 12_500_000_000, MemoryBytes: 200 << 20, WorkingSetBytes: 180 << 20, RSSBytes: 170 << 20, PageFaults: 99, OOMKills: 0, CFSThrottledPeriods: 4})
	e.Cgroups.SetUsage(podCg, cgroups.Usage{CPUNs: 13e9, MemoryBytes: 210 << 20, WorkingSetBytes: 190 << 20, RSSBytes: 171 << 20})

	cs, err := e.svc.ContainerStats(lcCtx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if m := cs.GetStats().GetMemory(); cs.GetStats().GetCpu().GetUsageCoreNanoSeconds().GetValue() != 12_500_000_000 ||
		m.GetWorkingSetBytes().GetValue() != 180<<20 || m.GetUsageBytes().GetValue() != 200<<20 || m.GetPageFaults().GetValue() != 99 {
		t.Errorf("ContainerStats %+v", cs.GetStats())
	}
	ps, err := e.svc.PodSandboxStats(lcCtx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: sbID})
	if err != nil {
		t.Fatal(err)
	}
	if l := ps.GetStats().GetLinux(); l.GetCpu().GetUsageCoreNanoSeconds().GetValue() != 13e9 || l.GetMemory().GetWorkingSetBytes().GetValue() != 190<<20 ||
		l.GetMemory().GetUsageBytes().GetValue() != 210<<20 {
		t.Errorf("PodSandboxStats %+v", l)
	}

	descs, err := e.svc.ListMetricDescriptors(lcCtx(t), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.GetDescriptors() {
		keys[d.GetName()] = len(d.GetLabelKeys())
	}
	resp, err := e.svc.ListPodSandboxMetrics(lcCtx(t), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(resp.GetPodMetrics()) != 1 {
		t.Fatalf("ListPodSandboxMetrics %+v, %v", resp, err)
	}
	pm := resp.GetPodMetrics()[0]
	got := map[string]*runtimeapi.Metric{}
	check := func(scope string, ms []*runtimeapi.Metric) {
		for _, m := range ms {
			n, ok := keys[m.GetName()]
			if !ok || n != len(m.GetLabelValues()) {
				t.Errorf("%s metric %s: %d label values, descriptor has %d keys (described: %v)", scope, m.GetName(), len(m.GetLabelValues()), n, ok)
			}
			got[scope+" "+m.GetName()] = m
		}
	}
	if pm.GetPodSandboxId() != sbID || len(pm.GetContainerMetrics()) != 1 || pm.GetContainerMetrics()[0].GetContainerId() != id {
		t.Fatalf("pod metrics %+v", pm)
	}
	check("pod", pm.GetMetrics())
	check("vm", pm.GetContainerMetrics()[0].GetMetrics())
	for k, want := range map[string]uint64{
		"vm container_cpu_usage_seconds_total":         12,
		"vm container_memory_working_set_bytes":        180 << 20,
		"vm container_cpu_cfs_throttled_periods_total": 4,
		"vm container_spec_memory_limit_bytes":         320 << 20,
		"vm container_spec_cpu_quota":                  50000,
		"pod container_cpu_usage_seconds_total":        13,
		"pod container_memory_working_set_bytes":       190 << 20,
	} {
		if m := got[k]; m == nil || m.GetValue().GetValue() != want {
			t.Errorf("%s = %v, want %d", k, m, want)
		}
	}
	vm := got["vm container_memory_working_set_bytes"].GetLabelValues()
	if want := []string{"vm", vmCg, "debian:12", id, "default", "web"}; !slices.Equal(vm, want) {
		t.Errorf("VM labels %q, want %q", vm, want)
	}
	if p := got["pod container_memory_working_set_bytes"].GetLabelValues(); p[0] != "" || p[1] != podCg {
		t.Errorf("pod labels %q", p)
	}
	if m := got["vm container_cpu_usage_seconds_total"]; m.GetMetricType() != runtimeapi.MetricType_COUNTER {
		t.Errorf("CPU seconds are a %v", m.GetMetricType())
	}
}

// TestMetricsWithoutCgroup: a VM outside its pod's cgroup has libvirt's
// CPU and memory figures only.
func TestMetricsWithoutCgroup(t *testing.T) {
	e := newLCEnv(t)
	e.runningVM(t, "plain")
	resp, err := e.svc.ListPodSandboxMetrics(lcCtx(t), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(resp.GetPodMetrics()) != 1 {
		t.Fatalf("%+v %v", resp, err)
	}
	var names []string
	for _, m := range resp.GetPodMetrics()[0].GetContainerMetrics()[0].GetMetrics() {
		names = append(names, m.GetName())
	}
	slices.Sort(names)
	if strings.Join(names, " ") != "container_cpu_usage_seconds_total container_memory_rss container_memory_usage_bytes container_memory_working_set_bytes" {
		t.Errorf("metrics %v", names)
	}
}

// TestUpdatePodSandboxResources: the RPC reaches the lifecycle; an
// unknown pod is NotFound.
func TestUpdatePodSandboxResources(t *testing.T) {
	e := newLCEnv(t)
	pod := placedPod("grow")
	sbID := e.runPod(t, pod)
	c := lcContainer("vm")
	c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20}}
	id := e.mustCreate(t, sbID, pod, c)
	e.mustStart(t, id)
	if _, err := e.svc.UpdatePodSandboxResources(lcCtx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: sbID, Overhead: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20},
	}); err != nil {
		t.Fatal(err)
	}
	if l := e.Cgroups.Placed()["/kubepods/pod-grow/vmpod-"+id].Placement.Limits; l.MemoryBytes != 384<<20 {
		t.Errorf("limit %d, want guest RAM + the new overhead", l.MemoryBytes)
	}
	_, err := e.svc.UpdatePodSandboxResources(lcCtx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "nope", Overhead: &runtimeapi.LinuxContainerResources{}})
	wantCode(t, err, codes.NotFound)
	_, err = e.svc.UpdatePodSandboxResources(lcCtx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: sbID, Overhead: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}})
	wantCode(t, err, codes.InvalidArgument, "negative")
}
