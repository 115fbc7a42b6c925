package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
	"github.com/vmpod/vmpod/pkg/podspec"
)

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
		{name: "annotations beat resources", podAnn: map[string]string{podspec.AnnVCPUs: "1", podspec.AnnMemory: "1Gi"},
			res:  &runtimeapi.LinuxContainerResources{CpuQuota: 300000, CpuPeriod: 100000, MemoryLimitInBytes: 2 << 30},
			want: with(func(s *lcDomainShape) { s.VCPUs, s.MemoryKiB, s.Quota, s.Period = 1, 1<<20, 300000, 100000 })},
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
