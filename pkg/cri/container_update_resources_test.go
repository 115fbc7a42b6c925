package cri

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/podspec"
)

func TestUpdateContainerResources(t *testing.T) {
	created := &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 200000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 30}
	for _, tc := range []struct {
		name     string
		update   *runtimeapi.LinuxContainerResources
		code     codes.Code
		wantCall string // SetCPUTune arguments, "" for no call
		want     lcDomainShape
	}{
		{name: "shares", update: &runtimeapi.LinuxContainerResources{CpuShares: 512},
			wantCall: "shares=512 period=100000 quota=200000"},
		{name: "quota within the vCPUs", update: &runtimeapi.LinuxContainerResources{CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 30},
			wantCall: "shares=1024 period=100000 quota=50000"},
		{name: "quota beyond the vCPUs", update: &runtimeapi.LinuxContainerResources{CpuQuota: 300000, CpuPeriod: 100000},
			code: codes.FailedPrecondition},
		{name: "memory", update: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 2 << 30},
			code: codes.FailedPrecondition},
		{name: "unchanged", update: created},
		{name: "nothing", update: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: created}
			id := e.mustCreate(t, e.runPod(t, pod), pod, c)
			e.mustStart(t, id)
			before := e.Record(t, id).VM
			n := len(e.LV.Calls())
			_, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: tc.update})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
			} else if err != nil {
				t.Fatal(err)
			}
			var tune []string
			for _, c := range e.CallsSince(n) {
				if strings.HasPrefix(c, "SetCPUTune") {
					tune = append(tune, c)
				}
			}
			var want []string
			if tc.wantCall != "" {
				want = []string{"SetCPUTune " + domainName(id) + " " + tc.wantCall}
			}
			if !slices.Equal(tune, want) {
				t.Errorf("SetCPUTune calls = %v, want %v", tune, want)
			}
			after := e.Record(t, id).VM
			shape := domainShape(e.DomainXML(t, domainName(id)))
			if tc.wantCall == "" {
				if after != before {
					t.Errorf("stored VM changed: %+v -> %+v", before, after)
				}
				return
			}
			if uint64(shape.Shares) != after.CPUShares || shape.Quota != after.CPUQuotaUS || shape.Period != after.CPUPeriodUS {
				t.Errorf("domain cputune %+v does not match the stored VM %+v", shape, after)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		e := newLCEnv(t)
		_, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{
			ContainerId: strings.Repeat("e", 64), Linux: &runtimeapi.LinuxContainerResources{CpuShares: 2}})
		wantCode(t, err, codes.NotFound)
	})
}

// TestUpdateResourcesUnchangedLimits: the kubelet's UpdateContainerResources
// carries the container's complete resources, so a CPU-only resize repeats
// the unchanged memory limit and CPU quota.
func TestUpdateResourcesUnchangedLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		created *runtimeapi.LinuxContainerResources
	}{
		{"memory annotation", map[string]string{podspec.AnnMemory: "512Mi"},
			&runtimeapi.LinuxContainerResources{CpuShares: 1024, MemoryLimitInBytes: 1 << 30}},
		{"vcpus annotation", map[string]string{podspec.AnnVCPUs: "1"},
			&runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 200000, CpuPeriod: 100000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			pod.Annotations = tc.ann
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.created}
			id := e.mustCreate(t, e.runPod(t, pod), pod, c)
			e.mustStart(t, id)
			update := proto.Clone(tc.created).(*runtimeapi.LinuxContainerResources)
			update.CpuShares = 512
			if _, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: update}); err != nil {
				t.Fatalf("CPU-shares-only update refused: %v", err)
			}
			if got := domainShape(e.DomainXML(t, domainName(id))).Shares; got != 512 {
				t.Errorf("domain shares = %d, want 512", got)
			}
		})
	}
}

// TestContainerStatusReportsUpdatedResources: after an update, the
// kubelet reads the applied resources back from ContainerStatus to see
// that an in-place resize is done.
func TestContainerStatusReportsUpdatedResources(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	c := lcContainer("vm")
	c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 1024}}
	id := e.mustCreate(t, e.runPod(t, pod), pod, c)
	e.mustStart(t, id)
	if _, err := e.svc.UpdateContainerResources(lcCtx(t), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512}}); err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, id).GetResources().GetLinux().GetCpuShares(); got != 512 {
		t.Errorf("ContainerStatus reports cpu shares %d after the update to 512", got)
	}
}
