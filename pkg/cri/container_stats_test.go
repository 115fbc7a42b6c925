package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStats(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	e.mustStart(t, id)

	resp, err := e.svc.ContainerStats(lcCtx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStats()
	// The fake reports CPU 1 s, 256 MiB current, 200 MiB usable, 300 MiB
	// RSS: the guest's claim (56 MiB in use) is below what the host
	// measures, so the working set is the RSS.
	if st.GetCpu().GetUsageCoreNanoSeconds().GetValue() != 1e9 ||
		st.GetMemory().GetWorkingSetBytes().GetValue() != 300<<20 ||
		st.GetMemory().GetRssBytes().GetValue() != 300<<20 ||
		st.GetAttributes().GetId() != id || st.GetWritableLayer() == nil {
		t.Fatalf("ContainerStats = %+v", st)
	}

	list, err := e.svc.ListContainerStats(lcCtx(t), &runtimeapi.ListContainerStatsRequest{})
	if err != nil || len(list.GetStats()) != 1 {
		t.Fatalf("ListContainerStats = %+v, %v", list, err)
	}
	pods, err := e.svc.ListPodSandboxStats(lcCtx(t), &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(pods.GetStats()) != 1 || pods.GetStats()[0].GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue() != 1e9 {
		t.Fatalf("ListPodSandboxStats = %+v, %v", pods, err)
	}
	// A list within stats_max_age of the collector's last round asks
	// libvirt nothing: it answers from the samples.
	before := 0
	for _, c := range e.LV.Calls() {
		if len(c) >= 5 && c[:5] == "Stats" {
			before++
		}
	}
	e.svc.ListContainerStats(lcCtx(t), &runtimeapi.ListContainerStatsRequest{})
	after := 0
	for _, c := range e.LV.Calls() {
		if len(c) >= 5 && c[:5] == "Stats" {
			after++
		}
	}
	if after-before != 0 {
		t.Fatalf("ListContainerStats made %d libvirt stats calls, want 0", after-before)
	}

	// A stopped VM has no CPU and memory, nor has its pod; its writable
	// layer is still reported.
	e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id})
	resp, err = e.svc.ContainerStats(lcCtx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil || resp.GetStats().GetCpu() != nil || resp.GetStats().GetMemory() != nil || resp.GetStats().GetWritableLayer() == nil {
		t.Fatalf("stats of a stopped VM: %+v, %v", resp, err)
	}
	pods, err = e.svc.ListPodSandboxStats(lcCtx(t), &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(pods.GetStats()) != 1 || pods.GetStats()[0].GetLinux().GetCpu() != nil {
		t.Fatalf("ListPodSandboxStats of a pod with its VM stopped = %+v, %v", pods, err)
	}
}
