package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
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

// TestCreateOutlastsDeadline: when the caller's deadline passes while the
// sandbox or VM is being built, the call fails with DeadlineExceeded but
// the work goes on, and the retry with the same name gets the same object
// instead of a second one.
func TestCreateOutlastsDeadline(t *testing.T) {
	t.Run("RunPodSandbox", func(t *testing.T) {
		e := newLCEnv(t)
		release := e.Clock.HoldNow() // runPodSandbox reads the clock for CreatedAt
		defer release()
		ctx, cancel := context.WithTimeout(lcCtx(t), 50*time.Millisecond)
		defer cancel()
		_, err := e.svc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		wantCode(t, err, codes.DeadlineExceeded)
		release()
		resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if ids := e.listPods(t, nil); len(ids) != 1 || ids[0] != resp.PodSandboxId {
			t.Fatalf("retry got %s; sandboxes are %v", resp.PodSandboxId, ids)
		}
	})

	for _, retryWhileBuilding := range []bool{false, true} {
		t.Run(fmt.Sprintf("CreateContainer/retry while building=%v", retryWhileBuilding), func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			sbID := e.runPod(t, pod)
			entered, release := e.Overlays.HoldCreates()
			defer release()
			req := &runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: lcContainer("vm"), SandboxConfig: pod}
			ctx, cancel := context.WithTimeout(lcCtx(t), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := e.svc.CreateContainer(ctx, req)
			wantCode(t, err, codes.DeadlineExceeded)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("CreateContainer returned %v after its deadline", d)
			}
			<-entered
			if ids := e.listContainers(t, nil); len(ids) != 0 {
				t.Errorf("ListContainers shows a container still being created: %v", ids)
			}

			type result struct {
				id  string
				err error
			}
			retry := make(chan result, 1)
			doRetry := func() {
				resp, err := e.svc.CreateContainer(lcQuiet(context.Background()), req)
				retry <- result{resp.GetContainerId(), err}
			}
			if retryWhileBuilding {
				go doRetry()
				select {
				case r := <-retry:
					t.Fatalf("retry returned %+v while the first create was still building", r)
				case <-time.After(50 * time.Millisecond):
				}
				release()
			} else {
				release()
				doRetry()
			}
			r := <-retry
			if r.err != nil {
				t.Fatalf("retry: %v", r.err)
			}
			recs := e.ContainerRecords(t)
			if len(recs) != 1 || recs[0].ID != r.id || recs[0].State != lifecycle.ContainerCreated {
				t.Fatalf("retry got %s; records are %+v", r.id, recs)
			}
			if doms := e.Domains(t); len(doms) != 1 || doms[0] != domainName(r.id) {
				t.Errorf("domains = %v, want just %s", doms, domainName(r.id))
			}
			if n := len(e.Overlays.Made()); n != 1 {
				t.Errorf("%d overlays made, want 1", n)
			}
		})
	}
}

// TestCreateContainerDomainGolden compares the defined domain with golden
// files; temp dirs and IDs are replaced by placeholders.
func TestCreateContainerDomainGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		res  *runtimeapi.LinuxContainerResources
	}{
		{"default", nil, nil},
		{"annotated-uefi", map[string]string{
			podspec.AnnVCPUs: "2", podspec.AnnMemory: "1Gi", podspec.AnnDiskBus: "scsi", podspec.AnnFirmware: "uefi", podspec.AnnCPUModel: "Skylake-Client",
		}, &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 150000, CpuPeriod: 100000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.ann {
				pod.Annotations[k] = v
			}
			sbID := e.runPod(t, pod)
			c := lcContainer("vm")
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.res}
			id := e.mustCreate(t, sbID, pod, c)
			if doms := e.Domains(t); len(doms) != 1 || doms[0] != "vmpod-"+id {
				t.Fatalf("domains = %v, want just vmpod-%s", doms, id)
			}
			doc, _, _ := e.LV.Domain("vmpod-" + id)
			got := strings.NewReplacer(
				e.RunRoot, "@RUN@", e.StateDir, "@STATE@",
				id, "@CONTAINER_ID@", id[:16], "@CONTAINER_ID_16@",
				sbID, "@SANDBOX_ID@", sbID[:10], "@SANDBOX_ID_10@", lifecycle.DomainUUID(id), "@UUID@", e.Meta.InstanceID(), "@INSTANCE@",
			).Replace(doc) + "\n"
			path := filepath.Join("testdata", "domain-"+tc.name+".xml")
			if lcUpdateGolden() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from the defined domain (rerun with -update and review the diff):\n%s", path, got)
			}
		})
	}
}

// lcDomainShape is what the VM-shaping inputs change in a domain.
type lcDomainShape struct {
	VCPUs      uint
	MemoryKiB  uint
	Bus        string
	Machine    string
	Loader     string
	CPU        string // model name, or mode when there is no model
	Shares     uint
	Period     uint64
	Quota      int64
	TBCacheMiB uint
}

func domainShape(dom *libvirtxml.Domain) lcDomainShape {
	s := lcDomainShape{VCPUs: dom.VCPU.Value, MemoryKiB: dom.Memory.Value, Machine: dom.OS.Type.Machine}
	if dom.Memory.Unit != "KiB" {
		s.MemoryKiB = 0
	}
	if len(dom.Devices.Disks) > 0 && dom.Devices.Disks[0].Target != nil {
		s.Bus = dom.Devices.Disks[0].Target.Bus
	}
	if dom.OS.Loader != nil {
		s.Loader = dom.OS.Loader.Path
	}
	if cpu := dom.CPU; cpu != nil {
		s.CPU = cpu.Mode
		if cpu.Model != nil {
			s.CPU = cpu.Model.Value
		}
	}
	if ct := dom.CPUTune; ct != nil {
		if ct.Shares != nil {
			s.Shares = ct.Shares.Value
		}
		if ct.GlobalPeriod != nil {
			s.Period = ct.GlobalPeriod.Value
		}
		if ct.GlobalQuota != nil {
			s.Quota = ct.GlobalQuota.Value
		}
	}
	if f := dom.Features; f != nil && f.TCG != nil && f.TCG.TBCache != nil {
		s.TBCacheMiB = f.TCG.TBCache.Size
	}
	return s
}

// TestCreateContainerShapesVM checks that annotations, resources and the
// runtime handler show up in the defined domain.
func TestCreateContainerShapesVM(t *testing.T) {
	base := lcDomainShape{VCPUs: 1, MemoryKiB: 512 << 10, Bus: "virtio", Machine: "pc", TBCacheMiB: 1024}
	with := func(f func(*lcDomainShape)) lcDomainShape { s := base; f(&s); return s }
	for _, tc := range []struct {
		name     string
		handler  string
		podAnn   map[string]string
		cAnn     map[string]string
		res      *runtimeapi.LinuxContainerResources
		want     lcDomainShape
		wantSize int64 // overlay virtual size
	}{
		{name: "defaults", want: base},
		{name: "pod annotations", podAnn: map[string]string{
			podspec.AnnVCPUs: "3", podspec.AnnMemory: "1Gi", podspec.AnnDiskBus: "sata", podspec.AnnFirmware: "uefi", podspec.AnnCPUModel: "Skylake-Client",
		}, want: with(func(s *lcDomainShape) {
			s.VCPUs, s.MemoryKiB, s.Bus, s.Machine, s.Loader, s.CPU = 3, 1<<20, "sata", "q35", "/usr/share/OVMF/OVMF_CODE_4M.fd", "Skylake-Client"
		})},
		{name: "scsi and host-model", podAnn: map[string]string{podspec.AnnDiskBus: "scsi", podspec.AnnCPUModel: "host-model"},
			want: with(func(s *lcDomainShape) { s.Bus, s.CPU = "scsi", "host-model" })},
		{name: "container annotation wins", podAnn: map[string]string{podspec.AnnVCPUs: "2", podspec.AnnMemory: "1Gi"},
			cAnn: map[string]string{podspec.AnnVCPUs: "4"},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.MemoryKiB = 4, 1<<20 })},
		{name: "cpu limit 1.5 rounds up", res: &runtimeapi.LinuxContainerResources{CpuQuota: 150000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 2, 150000, 100000 })},
		{name: "cpu limit 2", res: &runtimeapi.LinuxContainerResources{CpuQuota: 200000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 2, 200000, 100000 })},
		{name: "cpu limit 0.25", res: &runtimeapi.LinuxContainerResources{CpuQuota: 25000, CpuPeriod: 100000},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.Quota, s.Period = 1, 25000, 100000 })},
		{name: "cpu shares", res: &runtimeapi.LinuxContainerResources{CpuShares: 256},
			want: with(func(s *lcDomainShape) { s.Shares = 256 })},
		{name: "memory limit", res: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 768 << 20},
			want: with(func(s *lcDomainShape) { s.MemoryKiB = 768 << 10 })},
		{name: "annotations beat resources", podAnn: map[string]string{podspec.AnnVCPUs: "1", podspec.AnnMemory: "2Gi"},
			res:  &runtimeapi.LinuxContainerResources{CpuQuota: 300000, CpuPeriod: 100000, MemoryLimitInBytes: 768 << 20},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.MemoryKiB, s.Quota, s.Period = 1, 2<<20, 300000, 100000 })},
		{name: "handler tb cache", handler: "small", want: with(func(s *lcDomainShape) { s.TBCacheMiB = 256 })},
		{name: "root volume grows the disk", podAnn: map[string]string{podspec.AnnRootVolumeSize: "4Gi"}, want: base, wantSize: 4 << 30},
		{name: "root volume equal to the image", podAnn: map[string]string{podspec.AnnRootVolumeSize: "2Gi"}, want: base, wantSize: 2 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.podAnn {
				pod.Annotations[k] = v
			}
			resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: tc.handler})
			if err != nil {
				t.Fatal(err)
			}
			c := lcContainer("vm")
			c.Annotations = tc.cAnn
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: tc.res}
			id := e.mustCreate(t, resp.PodSandboxId, pod, c)
			if got := domainShape(e.DomainXML(t, domainName(id))); got != tc.want {
				t.Errorf("domain shape\n got %+v\nwant %+v", got, tc.want)
			}
			rec := e.Record(t, id)
			want := lifecycletest.OverlayCall{Path: rec.RootDisk, Backing: filepath.Join(e.Images.Dir, strings.Repeat("ef", 32)), Format: "qcow2", Size: tc.wantSize}
			if made := e.Overlays.Made(); len(made) != 1 || made[0] != want {
				t.Errorf("overlays = %+v, want %+v", made, want)
			}
			if rec.RootDisk != filepath.Join(e.StateDir, "containers", id, "root.qcow2") {
				t.Errorf("root disk at %s", rec.RootDisk)
			}
		})
	}
}

func TestCreateContainerRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		podAnn  map[string]string
		mod     func(*runtimeapi.ContainerConfig)
		code    codes.Code
		mention []string
		// fix are container annotations that override the pod's bad one
		// (the pod's options are parsed once, by RunPodSandbox).
		fix map[string]string
	}{
		{name: "root volume smaller than the image", podAnn: map[string]string{podspec.AnnRootVolumeSize: "1Gi"},
			code: codes.InvalidArgument, mention: []string{podspec.AnnRootVolumeSize, "virtual size"},
			fix: map[string]string{podspec.AnnRootVolumeSize: "2Gi"}},
		{name: "bad container annotation", mod: func(c *runtimeapi.ContainerConfig) { c.Annotations = map[string]string{podspec.AnnFirmware: "efi"} },
			code: codes.InvalidArgument, mention: []string{podspec.AnnFirmware}},
		{name: "image not pulled", mod: func(c *runtimeapi.ContainerConfig) { c.Image.Image = "ubuntu:24.04" },
			code: codes.NotFound, mention: []string{"ubuntu:24.04", "pull it first"}},
		{name: "no image", mod: func(c *runtimeapi.ContainerConfig) { c.Image = nil }, code: codes.InvalidArgument},
		{name: "no name", mod: func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, code: codes.InvalidArgument},
		{name: "memory limit below 64Mi", mod: func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
		}, code: codes.InvalidArgument, mention: []string{"64Mi"}},
		{name: "host-passthrough under TCG", podAnn: map[string]string{podspec.AnnCPUModel: "host-passthrough"},
			code: codes.InvalidArgument, mention: []string{"KVM"}, fix: map[string]string{podspec.AnnCPUModel: "host-model"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			for k, v := range tc.podAnn {
				pod.Annotations[k] = v
			}
			sbID := e.runPod(t, pod)
			c := lcContainer("vm")
			if tc.mod != nil {
				tc.mod(c)
			}
			_, err := e.create(sbID, pod, c)
			wantCode(t, err, tc.code, tc.mention...)
			e.AssertNoContainers(t)
			if made := e.Overlays.Made(); len(made) != 0 {
				t.Errorf("overlays made: %+v", made)
			}
			// The name is free: the fixed container is created.
			fixed := lcContainer("vm")
			fixed.Annotations = tc.fix
			e.mustCreate(t, sbID, pod, fixed)
		})
	}
	t.Run("unknown sandbox", func(t *testing.T) {
		e := newLCEnv(t)
		_, err := e.create(strings.Repeat("0", 64), lcPod("web"), lcContainer("vm"))
		wantCode(t, err, codes.NotFound)
	})
}

// TestCreateContainerRollback: a failure after the record was stored
// undoes everything, and the name can be used again.
func TestCreateContainerRollback(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	e.LV.FailNext("Define", fmt.Errorf("injected: %w", errdefs.ErrInternal))
	_, err := e.create(sbID, pod, lcContainer("vm"))
	wantCode(t, err, codes.Internal, "injected")
	if len(e.Overlays.Made()) != 1 {
		t.Fatalf("overlays = %+v; the failure should come after the overlay", e.Overlays.Made())
	}
	e.AssertNoContainers(t)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if doms := e.Domains(t); len(doms) != 1 || doms[0] != domainName(id) {
		t.Errorf("domains after the retry = %v", doms)
	}
}

// TestOneVMPerSandbox: a sandbox runs one VM at a time; after it exited,
// the kubelet's next attempt gets a fresh root disk.
func TestOneVMPerSandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	first := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	next := lcContainer("vm")
	next.Metadata.Attempt = 1

	_, err := e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, first, "CREATED")
	e.mustStart(t, first)
	_, err = e.create(sbID, pod, next)
	wantCode(t, err, codes.FailedPrecondition, first, "RUNNING")
	_, err = e.create(sbID, pod, lcContainer("sidecar"))
	wantCode(t, err, codes.FailedPrecondition)

	e.LV.GuestPowerOff(domainName(first))
	if st := e.status(t, first); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("first container is %v after power-off", st.State)
	}
	second := e.mustCreate(t, sbID, pod, next)
	if second == first {
		t.Fatal("the restart got the exited container's ID")
	}
	a, b := e.Record(t, first), e.Record(t, second)
	if a.RootDisk == b.RootDisk || a.RunDir == b.RunDir {
		t.Errorf("restart reuses the root disk or socket dir: %s %s / %s %s", a.RootDisk, b.RootDisk, a.RunDir, b.RunDir)
	}
	if made := e.Overlays.Made(); len(made) != 2 || made[1].Path != b.RootDisk {
		t.Errorf("overlays = %+v", made)
	}
	e.mustStart(t, second)
	if got := e.listContainers(t, &runtimeapi.ContainerFilter{PodSandboxId: sbID}); len(got) != 2 {
		t.Errorf("containers of the sandbox = %v", got)
	}
}

func TestStartContainer(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.CreatedAt != lcT0.UnixNano() || st.StartedAt != 0 {
		t.Fatalf("status before start = %+v", st)
	}
	n := len(e.LV.Calls())
	t1 := lcT0.Add(time.Minute)
	e.Clock.Set(t1)
	e.mustStart(t, id)
	dom := domainName(id)
	var lifecycle []string
	for _, c := range e.CallsSince(n) {
		if strings.HasPrefix(c, "Start ") || strings.HasPrefix(c, "Resume ") {
			lifecycle = append(lifecycle, c)
		}
	}
	if want := []string{"Start " + dom + " paused", "Resume " + dom}; !slices.Equal(lifecycle, want) {
		t.Errorf("libvirt calls = %v, want %v", lifecycle, want)
	}
	if st := e.DomainState(t, dom); st.State != libvirttools.DomainRunning {
		t.Errorf("domain is %v", st.State)
	}
	st := e.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != t1.UnixNano() || st.FinishedAt != 0 {
		t.Errorf("status after start = %+v", st)
	}
	rec := e.Record(t, id)
	con := e.Consoles.Last(t)
	if con.Socket != serialSocket(rec.RunDir) || con.LogPath != filepath.Join(pod.LogDirectory, "vm/0.log") {
		t.Errorf("console on %s logging to %s", con.Socket, con.LogPath)
	}
	if len(con.Socket) > 107 {
		t.Errorf("serial socket path is %d bytes", len(con.Socket))
	}

	_, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "RUNNING")
	_, err = e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: strings.Repeat("f", 64)})
	wantCode(t, err, codes.NotFound)
}

// TestStartContainerFailure: a start that fails leaves no VM running and
// the container CREATED, so a later start works.
func TestStartContainerFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(e *lcEnv)
	}{
		{"libvirt start", func(e *lcEnv) { e.LV.FailNext("Start", fmt.Errorf("injected: %w", errdefs.ErrInternal)) }},
		{"console", func(e *lcEnv) { e.Consoles.FailNext(errors.New("injected: no socket")) }},
		{"resume", func(e *lcEnv) { e.LV.FailNext("Resume", fmt.Errorf("injected: %w", errdefs.ErrInternal)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
			tc.fail(e)
			if _, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("StartContainer err = %v", err)
			}
			if st := e.DomainState(t, domainName(id)); st.State != libvirttools.DomainShutoff {
				t.Errorf("domain is %v after a failed start", st.State)
			}
			if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
				t.Errorf("container is %v after a failed start", st.State)
			}
			for _, c := range e.Consoles.All() {
				if !c.IsClosed() {
					t.Errorf("console %s left open", c.Socket)
				}
			}
			e.mustStart(t, id)
		})
	}
}

// TestContainerExit maps how a VM stopped to the container's exit.
func TestContainerExit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stop     func(t *testing.T, e *lcEnv, id string)
		code     int32
		reason   string
		message  string
		minTime  time.Duration // how long the stop may take at least
		stopCall bool          // stop is a StopContainer call
	}{
		{name: "guest powers off", stop: func(t *testing.T, e *lcEnv, id string) { e.LV.GuestPowerOff(domainName(id)) },
			code: 0, reason: reasonCompleted, message: "powered off"},
		{name: "crash", stop: func(t *testing.T, e *lcEnv, id string) { e.LV.Crash(domainName(id)) },
			code: exitCrashed, reason: reasonCrashed},
		{name: "destroyed outside vmpod", stop: func(t *testing.T, e *lcEnv, id string) {
			if err := e.LV.Destroy(context.Background(), domainName(id)); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled, message: "outside vmpod"},
		{name: "StopContainer, guest obeys ACPI", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
				t.Fatal(err)
			}
		}, code: 0, reason: reasonCompleted},
		{name: "StopContainer, guest ignores ACPI", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			e.LV.SetIgnoreACPI(domainName(id), true)
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled, message: "stop timeout", minTime: time.Second},
		{name: "StopContainer, timeout 0", stopCall: true, stop: func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		}, code: exitKilled, reason: reasonKilled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			_, id := e.runningVM(t, "web")
			con := e.Consoles.Last(t)
			t2 := lcT0.Add(time.Hour)
			e.Clock.Set(t2)
			start := time.Now()
			tc.stop(t, e, id)
			took := time.Since(start)
			if took < tc.minTime || took > tc.minTime+3*time.Second {
				t.Errorf("stop took %v, want about %v", took, tc.minTime)
			}
			st := e.status(t, id)
			if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != tc.code || st.Reason != tc.reason ||
				st.FinishedAt != t2.UnixNano() || !strings.Contains(st.Message, tc.message) {
				t.Errorf("status = state %v exit %d reason %q message %q finished %d; want EXITED %d %q %q %d",
					st.State, st.ExitCode, st.Reason, st.Message, st.FinishedAt, tc.code, tc.reason, tc.message, t2.UnixNano())
			}
			if tc.code != 0 && st.ExitCode == 0 {
				t.Error("a VM that did not power off itself exited 0")
			}
			if !con.IsClosed() {
				t.Error("console reader still open after the VM exited")
			}
			if s := e.DomainState(t, domainName(id)); s.State != libvirttools.DomainShutoff {
				t.Errorf("domain is %v", s.State)
			}
			// The exit is recorded, not just reported.
			if rec := e.Record(t, id); rec.State != lifecycle.ContainerExited || rec.ExitCode != tc.code {
				t.Errorf("record = %s exit %d", rec.State, rec.ExitCode)
			}
			if tc.stopCall {
				// Stopping again is a no-op that succeeds.
				n := len(e.LV.Calls())
				if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
					t.Fatalf("second stop: %v", err)
				}
				for _, c := range e.CallsSince(n) {
					if strings.HasPrefix(c, "Shutdown") || strings.HasPrefix(c, "Destroy") {
						t.Errorf("second stop called %s", c)
					}
				}
				if again := e.status(t, id); again.ExitCode != tc.code || again.Reason != tc.reason {
					t.Errorf("second stop changed the exit to %d %s", again.ExitCode, again.Reason)
				}
			}
		})
	}
}

func TestStopContainerIdempotent(t *testing.T) {
	e := newLCEnv(t)
	for _, id := range []string{strings.Repeat("e", 64), "abc", ""} {
		if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
			t.Errorf("StopContainer(%q): %v", id, err)
		}
	}
	// A container never started stays created.
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("created container is %v after stop", st.State)
	}
}

func TestRemoveContainer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool
	}{{"exited", false}, {"running", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			pod := lcPod("web")
			sbID, id := e.runningVM(t, "web")
			dom := domainName(id)
			if !tc.running {
				e.LV.GuestPowerOff(dom)
			}
			rec := e.Record(t, id)
			if rec.ImageRef != lcImageDebian.ID || rec.ImageDisk != lcImageDebian.Disk() {
				t.Errorf("record image %s disk %s", rec.ImageRef, rec.ImageDisk)
			}
			if !e.Pods.ImageDiskInUse(lcImageDebian.Disk()) || e.Pods.ImageDiskInUse(lcImageDebian.ID) {
				t.Error("ImageDiskInUse does not report the container's disk file")
			}
			con := e.Consoles.Last(t)
			n := len(e.LV.Calls())
			if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			calls := e.CallsSince(n)
			if _, _, ok := e.LV.Domain(dom); ok {
				t.Errorf("domain %s still defined", dom)
			}
			iDestroy, iUndefine := slices.Index(calls, "Destroy "+dom), slices.Index(calls, "Undefine "+dom)
			if iUndefine < 0 || (tc.running && (iDestroy < 0 || iDestroy > iUndefine)) {
				t.Errorf("calls = %v; want a Destroy before the Undefine of a running VM", calls)
			}
			if !con.IsClosed() {
				t.Error("console still open")
			}
			for _, d := range []string{rec.Dir, rec.RunDir} {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left (stat: %v)", d, err)
				}
			}
			e.AssertNoContainers(t)
			if ids := e.listContainers(t, nil); len(ids) != 0 {
				t.Errorf("ListContainers = %v", ids)
			}
			if got := e.Images.ReleasedIDs(); !slices.Equal(got, []string{lcImageDebian.Disk()}) {
				t.Errorf("image disks released = %v, want the disk digest %s", got, lcImageDebian.Disk())
			}
			if e.Pods.ImageDiskInUse(lcImageDebian.Disk()) {
				t.Error("image disk still in use after the container was removed")
			}
			_, err := e.svc.ContainerStatus(lcCtx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
			wantCode(t, err, codes.NotFound)
			// Idempotent, and the name is free again.
			if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Errorf("second remove: %v", err)
			}
			if got := e.Images.ReleasedIDs(); len(got) != 1 {
				t.Errorf("second remove released the image again: %v", got)
			}
			e.mustCreate(t, sbID, pod, lcContainer("vm"))
		})
	}
	t.Run("unknown", func(t *testing.T) {
		e := newLCEnv(t)
		if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: strings.Repeat("e", 64)}); err != nil {
			t.Errorf("RemoveContainer(unknown): %v", err)
		}
		if got := e.Images.ReleasedIDs(); len(got) != 0 {
			t.Errorf("images released = %v", got)
		}
	})
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

func TestListFilters(t *testing.T) {
	e := newLCEnv(t)
	webPod, dbPod, cachePod := lcPod("web"), lcPod("db"), lcPod("cache")
	cachePod.Labels["tier"] = "backend"
	dbPod.Labels["tier"] = "backend"
	web := e.runPod(t, webPod)
	db := e.runPod(t, dbPod)
	cache := e.runPod(t, cachePod)
	webVM := e.mustCreate(t, web, webPod, lcContainer("vm"))
	e.mustStart(t, webVM)
	dbVM := e.mustCreate(t, db, dbPod, lcContainer("vm"))
	cacheVM := e.mustCreate(t, cache, cachePod, lcContainer("cache"))
	e.mustStart(t, cacheVM)
	e.LV.GuestPowerOff(domainName(cacheVM))
	e.status(t, cacheVM) // notices the exit
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: cache}); err != nil {
		t.Fatal(err)
	}

	sorted := func(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }
	t.Run("sandboxes", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			f    *runtimeapi.PodSandboxFilter
			want []string
		}{
			{"all", nil, sorted(web, db, cache)},
			{"id", &runtimeapi.PodSandboxFilter{Id: db}, []string{db}},
			{"id prefix", &runtimeapi.PodSandboxFilter{Id: web[:12]}, []string{web}},
			{"unknown id", &runtimeapi.PodSandboxFilter{Id: "zzzz"}, nil},
			{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, sorted(web, db)},
			{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, []string{cache}},
			{"label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"}}, sorted(db, cache)},
			{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend", "app": "db"}}, []string{db}},
			{"label and state", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "backend"},
				State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{db}},
			{"no label match", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "frontend"}}, nil},
		} {
			if got := e.listPods(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("containers", func(t *testing.T) {
		state := func(s runtimeapi.ContainerState) *runtimeapi.ContainerStateValue {
			return &runtimeapi.ContainerStateValue{State: s}
		}
		for _, tc := range []struct {
			name string
			f    *runtimeapi.ContainerFilter
			want []string
		}{
			{"all", nil, sorted(webVM, dbVM, cacheVM)},
			{"id", &runtimeapi.ContainerFilter{Id: dbVM}, []string{dbVM}},
			{"id prefix", &runtimeapi.ContainerFilter{Id: webVM[:10]}, []string{webVM}},
			{"running", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, []string{webVM}},
			{"created", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_CREATED)}, []string{dbVM}},
			{"exited", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_EXITED)}, []string{cacheVM}},
			{"pod sandbox", &runtimeapi.ContainerFilter{PodSandboxId: cache}, []string{cacheVM}},
			{"pod sandbox prefix", &runtimeapi.ContainerFilter{PodSandboxId: web[:12]}, []string{webVM}},
			{"label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}}, sorted(webVM, dbVM)},
			{"label and pod", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "vm"}, PodSandboxId: db}, []string{dbVM}},
			{"pod and wrong state", &runtimeapi.ContainerFilter{PodSandboxId: db, State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, nil},
		} {
			if got := e.listContainers(t, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

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

// TestAttachConsoleFollowsVM: attach streams the console until the VM
// stops, and input reaches the console.
func TestAttachConsoleFollowsVM(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	con := e.Consoles.Last(t)
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.svc.AttachConsole(lcCtx(t), id, inR, outW, nil, true, nil) }()

	// Wait for the subscription, then feed output.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := con.Subscribers()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("AttachConsole did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go con.Feed("login: ")
	buf := make([]byte, 7)
	if _, err := io.ReadFull(outR, buf); err != nil || string(buf) != "login: " {
		t.Fatalf("attach output %q, %v", buf, err)
	}
	if _, err := inW.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	for con.Written() != "root\n" {
		if time.Now().After(deadline) {
			t.Fatalf("console input = %q", con.Written())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.LV.GuestPowerOff(domainName(id))
	e.status(t, id) // records the exit, closing the console
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("AttachConsole: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AttachConsole did not return after the VM stopped")
	}
	inW.Close()
	err := e.svc.AttachConsole(lcCtx(t), id, nil, nil, nil, false, nil)
	wantCode(t, err, codes.FailedPrecondition)
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

// TestUpdateResourcesUnchangedLimits: the kubelet's UpdateContainerResources
// carries the container's complete resources, so a CPU-only resize repeats
// the unchanged memory limit and CPU quota.
func TestUpdateResourcesUnchangedLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		created *runtimeapi.LinuxContainerResources
	}{
		{"memory annotation", map[string]string{podspec.AnnMemory: "1Gi"},
			&runtimeapi.LinuxContainerResources{CpuShares: 1024, MemoryLimitInBytes: 512 << 20}},
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

// TestStartContainerNeedsReadySandbox: a stopped sandbox runs no VM.
func TestStartContainerNeedsReadySandbox(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition)
	if st := e.DomainState(t, domainName(id)); st.State != libvirttools.DomainShutoff {
		t.Errorf("VM is %v in a NOTREADY sandbox", st.State)
	}
}

// TestCreateAfterFailedRollback: libvirt fails a create and then its
// rollback (a libvirtd hiccup); once libvirt is back, the kubelet's retry
// must be able to create the VM.
func TestCreateAfterFailedRollback(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	sbID := e.runPod(t, pod)
	e.LV.FailNext("Define", fmt.Errorf("injected: %w", errdefs.ErrUnavailable))
	e.LV.FailNext("Destroy", fmt.Errorf("injected: %w", errdefs.ErrUnavailable))
	_, err := e.create(sbID, pod, lcContainer("vm"))
	wantCode(t, err, codes.Unavailable)
	id, err := e.create(sbID, pod, lcContainer("vm"))
	if err != nil {
		t.Fatalf("retry after libvirt recovered: %v", err)
	}
	if doms := e.Domains(t); len(doms) != 1 || doms[0] != domainName(id) {
		t.Errorf("domains = %v", doms)
	}
}
