package cri

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/podspec"
)

func TestRunPodSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	id := e.runPod(t, pod)
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("sandbox ID %q is not 64 hex digits", id)
	}
	resp, err := e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Status
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Metadata.GetName() != "web" ||
		st.CreatedAt != lcT0.UnixNano() || st.RuntimeHandler != "vmpod" || st.Labels["app"] != "web" {
		t.Errorf("PodSandboxStatus = %+v", st)
	}
	recs := e.SandboxRecords(t)
	if len(recs) != 1 || recs[0].ID != id || recs[0].Name != "web_default_uid-web_0" || recs[0].State != lifecycle.SandboxReady {
		t.Errorf("sandbox records = %+v", recs)
	}
	if calls := e.LV.Calls(); len(calls) != 0 {
		t.Errorf("RunPodSandbox called libvirt: %v", calls)
	}

	t.Run("same name twice", func(t *testing.T) {
		_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		wantCode(t, err, codes.AlreadyExists, "web_default_uid-web_0")
	})
	t.Run("next attempt", func(t *testing.T) {
		next := lcPod("web")
		next.Metadata.Attempt = 1
		if id2 := e.runPod(t, next); id2 == id {
			t.Errorf("attempt 1 got the ID of attempt 0")
		}
	})
}

func TestRunPodSandboxInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mod     func(*runtimeapi.RunPodSandboxRequest)
		code    codes.Code
		mention []string
	}{
		{"no config", func(r *runtimeapi.RunPodSandboxRequest) { r.Config = nil }, codes.InvalidArgument, []string{"metadata"}},
		{"no metadata", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata = nil }, codes.InvalidArgument, []string{"metadata"}},
		{"no name", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Name = "" }, codes.InvalidArgument, []string{"name"}},
		{"no namespace", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Namespace = "" }, codes.InvalidArgument, []string{"namespace"}},
		{"no uid", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Uid = "" }, codes.InvalidArgument, []string{"uid"}},
		{"host network", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		}, codes.InvalidArgument, []string{"hostNetwork"}},
		{"unknown handler", func(r *runtimeapi.RunPodSandboxRequest) { r.RuntimeHandler = "kata" }, codes.InvalidArgument,
			[]string{`"kata"`, "known: small, vmpod"}},
		{"vcpus zero", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnVCPUs] = "0" }, codes.InvalidArgument, []string{podspec.AnnVCPUs}},
		{"vcpus not a number", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnVCPUs] = "two" }, codes.InvalidArgument, []string{podspec.AnnVCPUs}},
		{"vcpus too many", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnVCPUs] = "65" }, codes.InvalidArgument, []string{podspec.AnnVCPUs, "1 to 64"}},
		{"memory too small", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnMemory] = "32Mi" }, codes.InvalidArgument, []string{podspec.AnnMemory, "64Mi"}},
		{"memory garbage", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnMemory] = "lots" }, codes.InvalidArgument, []string{podspec.AnnMemory}},
		{"root volume zero", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnRootVolumeSize] = "0" }, codes.InvalidArgument, []string{podspec.AnnRootVolumeSize}},
		{"disk bus", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnDiskBus] = "ide" }, codes.InvalidArgument, []string{podspec.AnnDiskBus, "virtio, scsi or sata"}},
		{"firmware", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnFirmware] = "coreboot" }, codes.InvalidArgument, []string{podspec.AnnFirmware, "bios or uefi"}},
		{"cpu model", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Annotations[podspec.AnnCPUModel] = "bad model;" }, codes.InvalidArgument, []string{podspec.AnnCPUModel}},
		{"two bad annotations", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Annotations[podspec.AnnDiskBus] = "ide"
			r.Config.Annotations[podspec.AnnFirmware] = "coreboot"
		}, codes.InvalidArgument, []string{podspec.AnnDiskBus, podspec.AnnFirmware}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			req := &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")}
			tc.mod(req)
			resp, err := e.svc.RunPodSandbox(lcCtx(t), req)
			if err == nil {
				t.Fatalf("RunPodSandbox succeeded: %v", resp)
			}
			wantCode(t, err, tc.code, tc.mention...)
			if ids := e.listPods(t, nil); len(ids) != 0 {
				t.Errorf("ListPodSandbox after a refused run = %v", ids)
			}
			if recs := e.SandboxRecords(t); len(recs) != 0 {
				t.Errorf("sandbox records after a refused run: %+v", recs)
			}
			// The name was not kept: the same pod, fixed, runs.
			e.runPod(t, lcPod("web"))
		})
	}
}

func TestStopAndRemovePodSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID, id := e.runningVM(t, "web")
	otherID, otherVM := e.runningVM(t, "db")
	dom := domainName(id)

	for i := range 2 {
		if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
			t.Fatalf("StopPodSandbox #%d: %v", i+1, err)
		}
	}
	if st := e.podState(t, sbID); st != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("sandbox is %v after stop", st)
	}
	if recs := e.SandboxRecords(t); !slices.ContainsFunc(recs, func(r lifecycle.SandboxRecord) bool { return r.ID == sbID && r.State == lifecycle.SandboxNotReady }) {
		t.Errorf("NOTREADY not stored: %+v", recs)
	}
	if st := e.DomainState(t, dom); st.State != libvirttools.DomainShutoff {
		t.Errorf("VM is %v after StopPodSandbox", st.State)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != exitKilled {
		t.Errorf("container = %v exit %d", st.State, st.ExitCode)
	}
	if st := e.status(t, otherVM); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the other pod's VM is %v", st.State)
	}
	next := lcContainer("vm")
	next.Metadata.Attempt = 1
	_, err := e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, "NOTREADY")

	for i := range 2 {
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID}); err != nil {
			t.Fatalf("RemovePodSandbox #%d: %v", i+1, err)
		}
	}
	if ids := e.listPods(t, nil); !slices.Equal(ids, []string{otherID}) {
		t.Errorf("sandboxes after remove = %v", ids)
	}
	if ids := e.listContainers(t, nil); !slices.Equal(ids, []string{otherVM}) {
		t.Errorf("containers after remove = %v", ids)
	}
	if _, _, ok := e.LV.Domain(dom); ok {
		t.Errorf("domain %s still defined", dom)
	}
	if recs := e.SandboxRecords(t); len(recs) != 1 || recs[0].ID != otherID {
		t.Errorf("sandbox records = %+v", recs)
	}
	if recs := e.ContainerRecords(t); len(recs) != 1 || recs[0].ID != otherVM {
		t.Errorf("container records = %+v", recs)
	}
	_, err = e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbID})
	wantCode(t, err, codes.NotFound)
	// The pod's name is free again.
	e.runPod(t, lcPod("web"))

	t.Run("remove a running pod", func(t *testing.T) {
		n := len(e.LV.Calls())
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: otherID}); err != nil {
			t.Fatal(err)
		}
		d := domainName(otherVM)
		calls := e.CallsSince(n)
		if i, j := slices.Index(calls, "Destroy "+d), slices.Index(calls, "Undefine "+d); i < 0 || j < i {
			t.Errorf("calls = %v", calls)
		}
		if _, _, ok := e.LV.Domain(d); ok {
			t.Errorf("domain %s still defined", d)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		unknown := strings.Repeat("9", 64)
		if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: unknown}); err != nil {
			t.Errorf("StopPodSandbox(unknown): %v", err)
		}
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: unknown}); err != nil {
			t.Errorf("RemovePodSandbox(unknown): %v", err)
		}
	})
}

// TestRemovePodSandboxDuringAbandonedCreate: the kubelet gave up on a slow
// CreateContainer and removes the pod while the VM is still being built;
// the build must then leave nothing behind.
func TestRemovePodSandboxDuringAbandonedCreate(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	entered, release := e.Overlays.HoldCreates()
	defer release()
	ctx, cancel := context.WithTimeout(lcCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err := e.svc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: lcContainer("vm"), SandboxConfig: pod})
	wantCode(t, err, codes.DeadlineExceeded)
	<-entered
	removed := make(chan error, 1)
	go func() {
		_, err := e.svc.RemovePodSandbox(lcQuiet(context.Background()), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID})
		removed <- err
	}()
	time.Sleep(50 * time.Millisecond)
	release()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatalf("RemovePodSandbox: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RemovePodSandbox did not return after the create finished")
	}
	e.AssertNoContainers(t)
	if ids := e.listPods(t, nil); len(ids) != 0 {
		t.Errorf("sandboxes = %v", ids)
	}
	if recs := e.SandboxRecords(t); len(recs) != 0 {
		t.Errorf("sandbox records = %+v", recs)
	}
	e.runPod(t, lcPod("web"))
}
