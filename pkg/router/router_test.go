package router_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/router"
)

// harness is a router between two fake runtimes, all on unix sockets, and
// a CRI client of the router.
type harness struct {
	primary, vm         *fakeCRI
	primarySock, vmSock string
	stopPrimary, stopVM func()
	rt                  runtimeapi.RuntimeServiceClient
	img                 runtimeapi.ImageServiceClient
}

const rules = `
[[translations]]
name = "cirros"
url = "http://images.invalid/cirros.img"
`

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{
		primary: newFake("primary", "", "runc"), vm: newFake("vmpod", ""),
		primarySock: filepath.Join(dir, "p.sock"), vmSock: filepath.Join(dir, "v.sock"),
	}
	h.stopPrimary = h.primary.serve(t, h.primarySock)
	h.stopVM = h.vm.serve(t, h.vmSock)

	rulesDir := filepath.Join(dir, "images.d")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "10-test.toml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := router.New(router.Options{
		PrimaryEndpoint: "unix://" + h.primarySock,
		VMPodEndpoint:   h.vmSock, // a plain path works too
		Handlers:        []string{"vmpod"},
		Translator:      imagetranslation.New(rulesDir, log),
		VMPodTimeout:    2 * time.Second,
		Log:             log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	routerSock := filepath.Join(dir, "r.sock")
	lis, err := net.Listen("unix", routerSock)
	if err != nil {
		t.Fatal(err)
	}
	srv := router.NewServer(r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+routerSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.rt = runtimeapi.NewRuntimeServiceClient(conn)
	h.img = runtimeapi.NewImageServiceClient(conn)
	return h
}

// populate gives each fake a sandbox "<name>-sb" with a container
// "<name>-c", made behind the router's back: the router must find them
// without having seen them created.
func (h *harness) populate() {
	for _, f := range []*fakeCRI{h.primary, h.vm} {
		f.addSandbox(f.name+"-sb", f.name+"-uid")
		f.addContainer(f.name+"-c", f.name+"-sb")
	}
}

// which says which fake got method for id: "primary", "vmpod", "both" or "none".
func (h *harness) which(method, id string) string {
	p, v := h.primary.called(method, id), h.vm.called(method, id)
	switch {
	case p && v:
		return "both"
	case p:
		return "primary"
	case v:
		return "vmpod"
	}
	return "none"
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRunPodSandboxRoutesByHandler(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ handler, want string }{
		{"", "primary"},
		{"runc", "primary"},
		{"vmpod", "vmpod"},
	} {
		t.Run("handler="+tc.handler, func(t *testing.T) {
			resp, err := h.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{
				Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Uid: "u"}}, RuntimeHandler: tc.handler,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := h.which("RunPodSandbox", resp.PodSandboxId); got != tc.want {
				t.Errorf("RunPodSandbox went to %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRoutesByID(t *testing.T) {
	// Each call returns which backend answered it.
	calls := []struct {
		name string
		call func(ctx context.Context, h *harness, sb, c string) (string, error)
	}{
		{"PodSandboxStatus", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb})
			return resp.GetInfo()["backend"], err
		}},
		{"ContainerStatus", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c})
			return resp.GetInfo()["backend"], err
		}},
		{"ExecSync", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c, Cmd: []string{"true"}})
			return string(resp.GetStdout()), err
		}},
		{"Exec URL untouched", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: c, Cmd: []string{"sh"}})
			return backendOfURL(resp.GetUrl(), "exec"), err
		}},
		{"Attach URL untouched", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: c})
			return backendOfURL(resp.GetUrl(), "attach"), err
		}},
		{"PortForward URL untouched", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sb, Port: []int32{8080}})
			return backendOfURL(resp.GetUrl(), "portforward"), err
		}},
		{"CreateContainer", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			resp, err := h.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb})
			return h.which("CreateContainer", resp.GetContainerId()), err
		}},
		{"StartContainer", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			_, err := h.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c})
			return h.which("StartContainer", c), err
		}},
		{"StopContainer", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			_, err := h.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c})
			return h.which("StopContainer", c), err
		}},
		{"StopPodSandbox", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			_, err := h.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb})
			return h.which("StopPodSandbox", sb), err
		}},
		{"RemoveContainer", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			_, err := h.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c})
			return h.which("RemoveContainer", c), err
		}},
		{"RemovePodSandbox", func(ctx context.Context, h *harness, sb, c string) (string, error) {
			_, err := h.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb})
			return h.which("RemovePodSandbox", sb), err
		}},
	}
	for _, owner := range []string{"primary", "vmpod"} {
		t.Run(owner, func(t *testing.T) {
			h := newHarness(t) // a fresh router: no cache
			h.populate()
			for _, c := range calls { // in order: removals come last
				got, err := c.call(ctx(t), h, owner+"-sb", owner+"-c")
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				if got != owner {
					t.Errorf("%s: answered by %q, want %q", c.name, got, owner)
				}
			}
		})
	}
}

func backendOfURL(url, kind string) string {
	for _, b := range []string{"primary", "vmpod"} {
		if url == "http://127.0.0.1:1/"+b+"/"+kind+"/token" {
			return b
		}
	}
	return "changed URL " + url
}

func TestUnknownIDs(t *testing.T) {
	h := newHarness(t)
	c := ctx(t)
	if _, err := h.rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "gone"}); err != nil {
		t.Errorf("StopPodSandbox of an unknown ID: %v, want success", err)
	}
	if _, err := h.rt.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: "gone"}); err != nil {
		t.Errorf("RemoveContainer of an unknown ID: %v, want success", err)
	}
	if _, err := h.rt.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: "gone"}); status.Code(err) != codes.NotFound {
		t.Errorf("ContainerStatus of an unknown ID: %v, want NotFound", err)
	}
}

func TestBackendUnimplementedSurfaces(t *testing.T) {
	h := newHarness(t)
	h.populate()
	for _, owner := range []string{"primary", "vmpod"} {
		_, err := h.rt.CheckpointContainer(ctx(t), &runtimeapi.CheckpointContainerRequest{ContainerId: owner + "-c"})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("CheckpointContainer on %s: %v, want Unimplemented", owner, err)
		}
	}
}

func TestListsMerge(t *testing.T) {
	h := newHarness(t)
	h.populate()
	h.primary.addImage("nginx", "sha256:n")
	h.vm.addImage("cirros", "sha256:c")
	c := ctx(t)

	sbs, err := h.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sandboxIDs(sbs.Items); !slices.Equal(got, []string{"primary-sb", "vmpod-sb"}) {
		t.Errorf("ListPodSandbox = %v, want both runtimes' sandboxes", got)
	}
	sbs, err = h.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: "vmpod-sb"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sandboxIDs(sbs.Items); !slices.Equal(got, []string{"vmpod-sb"}) {
		t.Errorf("filtered ListPodSandbox = %v, want [vmpod-sb]", got)
	}
	for _, f := range []*fakeCRI{h.primary, h.vm} {
		if !slices.Contains(f.filters, "vmpod-sb") {
			t.Errorf("%s did not get the filter: %v", f.name, f.filters)
		}
	}

	ctrs, err := h.rt.ListContainers(c, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ct := range ctrs.Containers {
		ids = append(ids, ct.Id)
	}
	if !slices.Equal(ids, []string{"primary-c", "vmpod-c"}) {
		t.Errorf("ListContainers = %v, want both runtimes' containers", ids)
	}

	imgs, err := h.img.ListImages(c, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var imgIDs []string
	for _, im := range imgs.Images {
		imgIDs = append(imgIDs, im.Id)
	}
	if !slices.Equal(imgIDs, []string{"sha256:n", "sha256:c"}) {
		t.Errorf("ListImages = %v, want the primary's then vmpod's", imgIDs)
	}

	fs, err := h.img.ImageFsInfo(c, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, u := range fs.ImageFilesystems {
		mounts = append(mounts, u.GetFsId().GetMountpoint())
	}
	if !slices.Equal(mounts, []string{"/primary", "/vmpod"}) {
		t.Errorf("ImageFsInfo image filesystems = %v, want the primary's first, then vmpod's", mounts)
	}

	stream, err := h.rt.StreamPodSandboxes(c, &runtimeapi.StreamPodSandboxesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var streamed []*runtimeapi.PodSandbox
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		streamed = append(streamed, m.PodSandboxes...)
	}
	if got := sandboxIDs(streamed); !slices.Equal(got, []string{"primary-sb", "vmpod-sb"}) {
		t.Errorf("StreamPodSandboxes = %v, want both runtimes' sandboxes", got)
	}
}

func sandboxIDs(items []*runtimeapi.PodSandbox) []string {
	var ids []string
	for _, s := range items {
		ids = append(ids, s.Id)
	}
	return ids
}

func TestImageRouting(t *testing.T) {
	h := newHarness(t)
	h.vm.addSandbox("vm-pod-sb", "vm-pod-uid")
	h.primary.addImage("nginx", "sha256:nginx")
	h.primary.addImage("both", "sha256:both-p")
	h.vm.addImage("both", "sha256:both-v")
	h.vm.addImage("only-vm", "sha256:only-vm")
	sandbox := func(uid string) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: uid}}
	}

	for _, tc := range []struct {
		name, image, handler string
		sandbox              *runtimeapi.PodSandboxConfig
		want                 string
	}{
		{"plain name", "busybox", "", nil, "primary"},
		{"translation rule", "cirros", "", nil, "vmpod"},
		{"translation rule with tag", "cirros:0.6", "", nil, "vmpod"},
		{"vmpod handler", "registry.example/disks/debian:12", "vmpod", nil, "vmpod"},
		{"other handler", "registry.example/app:1", "runc", nil, "primary"},
		{"pod vmpod runs", "registry.example/disks/alpine:3", "", sandbox("vm-pod-uid"), "vmpod"},
		{"pod vmpod does not run", "registry.example/app:2", "", sandbox("other-uid"), "primary"},
	} {
		t.Run("PullImage "+tc.name, func(t *testing.T) {
			_, err := h.img.PullImage(ctx(t), &runtimeapi.PullImageRequest{
				Image: &runtimeapi.ImageSpec{Image: tc.image, RuntimeHandler: tc.handler}, SandboxConfig: tc.sandbox,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := h.which("PullImage", tc.image); got != tc.want {
				t.Errorf("PullImage %q went to %s, want %s", tc.image, got, tc.want)
			}
		})
	}

	for _, tc := range []struct{ image, wantID string }{
		{"nginx", "sha256:nginx"},
		{"both", "sha256:both-p"},     // the primary's when both have it
		{"only-vm", "sha256:only-vm"}, // vmpod's when only vmpod has it
		{"sha256:only-vm", "sha256:only-vm"},
		{"cirros", "vmpod-cirros"}, // by rule, pulled above
		{"missing", ""},
	} {
		t.Run("ImageStatus "+tc.image, func(t *testing.T) {
			resp, err := h.img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: tc.image}})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetImage().GetId(); got != tc.wantID {
				t.Errorf("ImageStatus %q: ID %q, want %q", tc.image, got, tc.wantID)
			}
		})
	}

	for _, tc := range []struct{ image, want string }{
		{"sha256:nginx", "primary"},
		{"sha256:only-vm", "vmpod"}, // image garbage collection removes by ID
		{"cirros", "vmpod"},
		{"never-pulled", "primary"},
	} {
		t.Run("RemoveImage "+tc.image, func(t *testing.T) {
			if _, err := h.img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.image}}); err != nil {
				t.Fatal(err)
			}
			if got := h.which("RemoveImage", tc.image); got != tc.want {
				t.Errorf("RemoveImage %q went to %s, want %s", tc.image, got, tc.want)
			}
		})
	}
}

func TestStatusVersionRuntimeConfig(t *testing.T) {
	h := newHarness(t)
	c := ctx(t)
	st, err := h.rt.Status(c, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rh := range st.RuntimeHandlers {
		names = append(names, rh.Name)
	}
	if !slices.Equal(names, []string{"", "runc", "vmpod"}) {
		t.Errorf("runtime_handlers = %q, want the primary's plus vmpod", names)
	}
	if !st.RuntimeHandlers[2].GetFeatures().GetRecursiveReadOnlyMounts() {
		t.Errorf("vmpod's handler features were not taken from vmpod's Status: %v", st.RuntimeHandlers[2])
	}
	if got := st.GetStatus().GetConditions()[0].GetReason(); got != "primary" {
		t.Errorf("conditions come from %q, want the primary", got)
	}
	if !strings.Contains(st.Info["vmpod"], h.vmSock) {
		t.Errorf("verbose info[vmpod] = %q, want vmpod's endpoint", st.Info["vmpod"])
	}
	v, err := h.rt.Version(c, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "primary" {
		t.Errorf("Version = %v, %v; want the primary's", v, err)
	}
	rc, err := h.rt.RuntimeConfig(c, &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.GetLinux().GetCgroupDriver() != runtimeapi.CgroupDriver_SYSTEMD {
		t.Errorf("RuntimeConfig = %v, %v; want the primary's", rc, err)
	}
	if h.vm.called("Version", "") || h.vm.called("RuntimeConfig", "") {
		t.Error("Version or RuntimeConfig reached vmpod")
	}
}

func TestVMPodDown(t *testing.T) {
	h := newHarness(t)
	h.populate()
	h.primary.addImage("nginx", "sha256:n")
	h.stopVM()
	c := ctx(t)

	// The primary's pods keep working, even for IDs the router never saw.
	if _, err := h.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "primary-sb"}); err != nil {
		t.Errorf("PodSandboxStatus of a primary pod: %v", err)
	}
	if _, err := h.rt.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: "primary-c"}); err != nil {
		t.Errorf("StopContainer of a primary container: %v", err)
	}
	if _, err := h.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}}); err != nil {
		t.Errorf("RunPodSandbox for the primary: %v", err)
	}
	if _, err := h.img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil {
		t.Errorf("PullImage for the primary: %v", err)
	}
	if st, err := h.img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "missing"}}); err != nil || st.Image != nil {
		t.Errorf("ImageStatus of a missing image = %v, %v; want no image, no error", st, err)
	}
	// The router never had a list from vmpod (TestVMPodRestartKeepsVMPodsListed
	// has one).
	sbs, err := h.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	if got := sandboxIDs(sbs.Items); !slices.Contains(got, "primary-sb") || slices.Contains(got, "vmpod-sb") {
		t.Errorf("ListPodSandbox = %v, want the primary's only", got)
	}
	if _, err := h.img.ImageFsInfo(c, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		t.Errorf("ImageFsInfo: %v", err)
	}
	st, err := h.rt.Status(c, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if n := len(st.RuntimeHandlers); n == 0 || st.RuntimeHandlers[n-1].Name != "vmpod" {
		t.Errorf("Status handlers = %v, want vmpod's still listed", st.RuntimeHandlers)
	}

	// VM calls fail with Unavailable, naming vmpod's socket.
	vmCalls := map[string]func() error{
		"RunPodSandbox": func() error {
			_, err := h.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}, RuntimeHandler: "vmpod"})
			return err
		},
		"PodSandboxStatus": func() error {
			_, err := h.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "vmpod-sb"})
			return err
		},
		"StopContainer": func() error {
			_, err := h.rt.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: "vmpod-c"})
			return err
		},
		"PullImage": func() error {
			_, err := h.img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "cirros"}})
			return err
		},
	}
	for name, call := range vmCalls {
		err := call()
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), h.vmSock) {
			t.Errorf("%s with vmpod down: %v; want Unavailable naming %s", name, err, h.vmSock)
		}
	}
}

// TestVMPodRestartKeepsVMPodsListed: while vmpod is away (the DaemonSet's
// pod restarting), the lists show the VM pods as vmpod last listed them,
// filtered as vmpod filters, so the kubelet does not take them for gone;
// calls for them still fail with Unavailable; once vmpod is back its own
// answer counts again.
func TestVMPodRestartKeepsVMPodsListed(t *testing.T) {
	h := newHarness(t)
	h.populate()
	h.vm.addSandbox("vmpod-sb2", "vmpod-uid2")
	h.vm.addContainer("vmpod-c2", "vmpod-sb2")
	c := ctx(t)
	listSandboxes := func(f *runtimeapi.PodSandboxFilter) []string {
		t.Helper()
		resp, err := h.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatalf("ListPodSandbox(%v): %v", f, err)
		}
		got := sandboxIDs(resp.Items)
		slices.Sort(got)
		return got
	}
	listContainers := func(f *runtimeapi.ContainerFilter) []string {
		t.Helper()
		resp, err := h.rt.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatalf("ListContainers(%v): %v", f, err)
		}
		var got []string
		for _, ctr := range resp.Containers {
			got = append(got, ctr.Id)
		}
		slices.Sort(got)
		return got
	}
	all := []string{"primary-sb", "vmpod-sb", "vmpod-sb2"}
	allCtrs := []string{"primary-c", "vmpod-c", "vmpod-c2"}
	// The kubelet's relist: no filter.
	if got := listSandboxes(nil); !slices.Equal(got, all) {
		t.Fatalf("ListPodSandbox with vmpod up = %v, want %v", got, all)
	}
	if got := listContainers(&runtimeapi.ContainerFilter{}); !slices.Equal(got, allCtrs) {
		t.Fatalf("ListContainers with vmpod up = %v, want %v", got, allCtrs)
	}

	h.stopVM()
	if got := listSandboxes(nil); !slices.Equal(got, all) {
		t.Errorf("ListPodSandbox with vmpod away = %v, want %v (the VM pods as last listed)", got, all)
	}
	if got := listContainers(nil); !slices.Equal(got, allCtrs) {
		t.Errorf("ListContainers with vmpod away = %v, want %v", got, allCtrs)
	}
	// The fake primary ignores most filters: only vmpod's part is checked.
	vmOnly := func(ids []string) []string {
		return slices.DeleteFunc(ids, func(id string) bool { return !strings.HasPrefix(id, "vmpod-") })
	}
	for _, tc := range []struct {
		name string
		f    *runtimeapi.PodSandboxFilter
		want []string
	}{
		{"a pod's uid (GetPodStatus)", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": "vmpod-uid2"}}, []string{"vmpod-sb2"}},
		{"an ID prefix", &runtimeapi.PodSandboxFilter{Id: "vmpod-sb2"}, []string{"vmpod-sb2"}},
		{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, []string{"vmpod-sb", "vmpod-sb2"}},
		{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, nil},
	} {
		if got := vmOnly(listSandboxes(tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("ListPodSandbox by %s with vmpod away = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := vmOnly(listContainers(&runtimeapi.ContainerFilter{PodSandboxId: "vmpod-sb2"})); !slices.Equal(got, []string{"vmpod-c2"}) {
		t.Errorf("ListContainers of vmpod-sb2 with vmpod away = %v, want [vmpod-c2]", got)
	}
	if got := vmOnly(listContainers(&runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_EXITED}})); len(got) != 0 {
		t.Errorf("exited containers with vmpod away = %v, want none", got)
	}
	_, err := h.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "vmpod-sb"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("PodSandboxStatus of a held VM pod: %v, want Unavailable", err)
	}

	// vmpod back, without vmpod-sb2: its answer, not the held one.
	back := newFake("vmpod", "")
	back.addSandbox("vmpod-sb", "vmpod-uid")
	back.serve(t, h.vmSock)
	want := []string{"primary-sb", "vmpod-sb"}
	deadline := time.Now().Add(5 * time.Second)
	for got := listSandboxes(nil); !slices.Equal(got, want); got = listSandboxes(nil) {
		if time.Now().After(deadline) {
			t.Fatalf("ListPodSandbox after vmpod came back = %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestVMPodHung(t *testing.T) {
	h := newHarness(t) // VMPodTimeout 2s
	h.populate()
	h.vm.hang = true
	c := ctx(t)

	start := time.Now()
	if _, err := h.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "primary-sb"}); err != nil {
		t.Fatalf("PodSandboxStatus of a primary pod: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a primary pod's status took %v while vmpod hangs; the primary's answer should not wait for vmpod", d)
	}
	_, err := h.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "vmpod-sb"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), h.vmSock) {
		t.Errorf("PodSandboxStatus of a VM while vmpod hangs: %v; want Unavailable naming %s", err, h.vmSock)
	}
}

func TestBackendRestart(t *testing.T) {
	h := newHarness(t)
	c := ctx(t)
	runVM := func() error {
		_, err := h.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}, RuntimeHandler: "vmpod"})
		return err
	}
	version := func() error {
		_, err := h.rt.Version(c, &runtimeapi.VersionRequest{})
		return err
	}
	for _, tc := range []struct {
		name string
		stop func()
		sock string
		fake func() *fakeCRI
		call func() error
	}{
		{"vmpod", h.stopVM, h.vmSock, func() *fakeCRI { return newFake("vmpod", "") }, runVM},
		{"primary", h.stopPrimary, h.primarySock, func() *fakeCRI { return newFake("primary", "") }, version},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err != nil {
				t.Fatalf("before the restart: %v", err)
			}
			tc.stop()
			if err := tc.call(); status.Code(err) != codes.Unavailable {
				t.Fatalf("while down: %v, want Unavailable", err)
			}
			tc.fake().serve(t, tc.sock)
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := tc.call()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s restarted on the same socket is not reached again: %v", tc.name, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func TestContainerEventsMerged(t *testing.T) {
	h := newHarness(t)
	h.primary.events <- &runtimeapi.ContainerEventResponse{ContainerId: "primary-c"}
	h.vm.events <- &runtimeapi.ContainerEventResponse{ContainerId: "vmpod-c"}
	stream, err := h.rt.GetContainerEvents(ctx(t), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, ev.ContainerId)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"primary-c", "vmpod-c"}) {
		t.Errorf("events = %v, want one from each runtime", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]router.Options{
		"no handlers":   {PrimaryEndpoint: "/run/p.sock", VMPodEndpoint: "/run/v.sock"},
		"empty handler": {PrimaryEndpoint: "/run/p.sock", VMPodEndpoint: "/run/v.sock", Handlers: []string{""}},
		"relative path": {PrimaryEndpoint: "run/p.sock", VMPodEndpoint: "/run/v.sock", Handlers: []string{"vmpod"}},
		"tcp endpoint":  {PrimaryEndpoint: "/run/p.sock", VMPodEndpoint: "tcp://127.0.0.1:1", Handlers: []string{"vmpod"}},
	} {
		if r, err := router.New(opts); err == nil {
			r.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}
