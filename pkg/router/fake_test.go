package router_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is a hand-written in-memory CRI runtime. Every answer names the
// fake (Info["backend"], ExecSync stdout, streaming URLs), and every call is
// recorded as "Method id", so a test sees where the router sent a call.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	name     string
	handlers []string // runtime_handlers reported by Status
	// hang makes the status calls block until the caller gives up, as a
	// vmpod still recovering its state after a restart does.
	hang   bool
	events chan *runtimeapi.ContainerEventResponse

	mu         sync.Mutex
	calls      []string
	filters    []string // filter IDs seen by List calls
	sandboxes  map[string]*runtimeapi.PodSandboxMetadata
	containers map[string]string // container ID -> sandbox ID
	images     map[string]string // name -> image ID
	next       int
}

func newFake(name string, handlers ...string) *fakeCRI {
	return &fakeCRI{
		name: name, handlers: handlers,
		events:     make(chan *runtimeapi.ContainerEventResponse, 10),
		sandboxes:  map[string]*runtimeapi.PodSandboxMetadata{},
		containers: map[string]string{},
		images:     map[string]string{},
	}
}

// serve serves f on a unix socket at path until the test ends or stop is
// called.
func (f *fakeCRI) serve(t *testing.T, path string) (stop func()) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	runtimeapi.RegisterImageServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv.Stop
}

func (f *fakeCRI) record(method, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, method+" "+id)
}

// called tells whether the fake got method for id.
func (f *fakeCRI) called(method, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.calls, method+" "+id)
}

func (f *fakeCRI) addSandbox(id, uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes[id] = &runtimeapi.PodSandboxMetadata{Name: id, Namespace: "default", Uid: uid}
}

func (f *fakeCRI) addContainer(id, sandboxID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = sandboxID
}

func (f *fakeCRI) addImage(name, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[name] = id
}

func (f *fakeCRI) info() map[string]string { return map[string]string{"backend": f.name} }

func (f *fakeCRI) hasSandbox(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; !ok {
		return status.Errorf(codes.NotFound, "%s: no sandbox %s", f.name, id)
	}
	return nil
}

func (f *fakeCRI) hasContainer(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[id]; !ok {
		return status.Errorf(codes.NotFound, "%s: no container %s", f.name, id)
	}
	return nil
}

func (f *fakeCRI) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	f.record("Version", "")
	return &runtimeapi.VersionResponse{RuntimeName: f.name, RuntimeApiVersion: "v1"}, nil
}

func (f *fakeCRI) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	f.record("RuntimeConfig", "")
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_SYSTEMD}}, nil
}

func (f *fakeCRI) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	f.record("Status", "")
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Status: true, Reason: f.name}}},
		Info:   f.info(),
	}
	for _, h := range f.handlers {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: h, Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: f.name == "vmpod"},
		})
	}
	return resp, nil
}

func (f *fakeCRI) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	f.mu.Lock()
	f.next++
	id := fmt.Sprintf("%s-sb%d", f.name, f.next)
	f.mu.Unlock()
	f.addSandbox(id, req.GetConfig().GetMetadata().GetUid())
	f.record("RunPodSandbox", id)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (f *fakeCRI) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	f.record("StopPodSandbox", req.GetPodSandboxId())
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (f *fakeCRI) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	f.record("RemovePodSandbox", req.GetPodSandboxId())
	f.mu.Lock()
	delete(f.sandboxes, req.GetPodSandboxId())
	f.mu.Unlock()
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (f *fakeCRI) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.record("PodSandboxStatus", req.GetPodSandboxId())
	if f.hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if err := f.hasSandbox(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: req.GetPodSandboxId()}, Info: f.info()}, nil
}

func (f *fakeCRI) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.record("ListPodSandbox", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, req.GetFilter().GetId())
	resp := &runtimeapi.ListPodSandboxResponse{}
	for id, md := range f.sandboxes {
		if fid := req.GetFilter().GetId(); fid != "" && fid != id {
			continue
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{Id: id, Metadata: md, State: runtimeapi.PodSandboxState_SANDBOX_READY,
			Labels: map[string]string{"io.kubernetes.pod.uid": md.GetUid()}})
	}
	return resp, nil
}

func (f *fakeCRI) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := f.hasSandbox(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.next++
	id := fmt.Sprintf("%s-c%d", f.name, f.next)
	f.mu.Unlock()
	f.addContainer(id, req.GetPodSandboxId())
	f.record("CreateContainer", id)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeCRI) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	f.record("StartContainer", req.GetContainerId())
	return &runtimeapi.StartContainerResponse{}, f.hasContainer(req.GetContainerId())
}

func (f *fakeCRI) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	f.record("StopContainer", req.GetContainerId())
	return &runtimeapi.StopContainerResponse{}, nil
}

func (f *fakeCRI) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	f.record("RemoveContainer", req.GetContainerId())
	f.mu.Lock()
	delete(f.containers, req.GetContainerId())
	f.mu.Unlock()
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (f *fakeCRI) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	f.record("ContainerStatus", req.GetContainerId())
	if err := f.hasContainer(req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: req.GetContainerId()}, Info: f.info()}, nil
}

func (f *fakeCRI) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.record("ListContainers", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, req.GetFilter().GetPodSandboxId())
	resp := &runtimeapi.ListContainersResponse{}
	for id, sb := range f.containers {
		if fsb := req.GetFilter().GetPodSandboxId(); fsb != "" && fsb != sb {
			continue
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{Id: id, PodSandboxId: sb, State: runtimeapi.ContainerState_CONTAINER_RUNNING})
	}
	return resp, nil
}

func (f *fakeCRI) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	f.record("ExecSync", req.GetContainerId())
	return &runtimeapi.ExecSyncResponse{Stdout: []byte(f.name)}, f.hasContainer(req.GetContainerId())
}

func (f *fakeCRI) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	f.record("Exec", req.GetContainerId())
	return &runtimeapi.ExecResponse{Url: "http://127.0.0.1:1/" + f.name + "/exec/token"}, nil
}

func (f *fakeCRI) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	f.record("Attach", req.GetContainerId())
	return &runtimeapi.AttachResponse{Url: "http://127.0.0.1:1/" + f.name + "/attach/token"}, nil
}

func (f *fakeCRI) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	f.record("PortForward", req.GetPodSandboxId())
	return &runtimeapi.PortForwardResponse{Url: "http://127.0.0.1:1/" + f.name + "/portforward/token"}, nil
}

func (f *fakeCRI) GetContainerEvents(req *runtimeapi.GetEventsRequest, srv grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	for {
		select {
		case ev := <-f.events:
			if err := srv.Send(ev); err != nil {
				return err
			}
		case <-srv.Context().Done():
			return nil
		}
	}
}

func (f *fakeCRI) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	name := req.GetImage().GetImage()
	f.record("ImageStatus", name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[name]; ok {
		return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id, RepoTags: []string{name}}, Info: f.info()}, nil
	}
	for n, id := range f.images {
		if id == name {
			return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id, RepoTags: []string{n}}, Info: f.info()}, nil
		}
	}
	return &runtimeapi.ImageStatusResponse{}, nil
}

func (f *fakeCRI) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	name := req.GetImage().GetImage()
	f.record("PullImage", name)
	id := f.name + "-" + name
	f.addImage(name, id)
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

func (f *fakeCRI) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	name := req.GetImage().GetImage()
	f.record("RemoveImage", name)
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, id := range f.images {
		if n == name || id == name {
			delete(f.images, n)
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

func (f *fakeCRI) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	f.record("ListImages", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &runtimeapi.ListImagesResponse{}
	for n, id := range f.images {
		resp.Images = append(resp.Images, &runtimeapi.Image{Id: id, RepoTags: []string{n}})
	}
	return resp, nil
}

func (f *fakeCRI) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	f.record("ImageFsInfo", "")
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems: []*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: "/" + f.name}}},
	}, nil
}
