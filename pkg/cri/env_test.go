package cri

import (
	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
	"github.com/vmpod/vmpod/pkg/logging"
)

// The RPC tests drive the Service as the kubelet does, over the whole VM
// pod lifecycle: a lifecycle.Controller built over the stateful libvirt
// fake, a real metadata store and the fakes of lifecycletest. Errors are
// checked through toGRPC, the mapping the gRPC boundary applies. Each
// RPC group has its test file: sandbox_test.go, container_*_test.go,
// exec, attach, stats, events, recovery (across restarts), metrics.

// The -update flag rewrites the golden files under testdata/ instead of
// comparing with them; registered only if another test file of this package
// has not registered it already.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files under testdata/ instead of comparing")
	}
}

func lcUpdateGolden() bool {
	g, ok := flag.Lookup("update").Value.(flag.Getter)
	if !ok {
		return false
	}
	v, _ := g.Get().(bool)
	return v
}

// Exit codes and reasons the CRI reports for a VM (lifecycle/container_exit.go).
const (
	exitCompleted = 0
	exitKilled    = 137
	exitCrashed   = 139

	reasonCompleted = "Completed"
	reasonKilled    = "Killed"
	reasonCrashed   = "Crashed"
)

// The fake images.
var (
	lcImageDebian = lifecycletest.ImageDebian
	lcImageAlpine = lifecycletest.ImageAlpine
	lcT0          = lifecycletest.T0
)

// lcEnv is a Service over a lifecycletest.Env.
type lcEnv struct {
	*lifecycletest.Env
	svc *Service
}

func newLCEnv(t *testing.T) *lcEnv {
	t.Helper()
	e := &lcEnv{Env: lifecycletest.NewEnv(t)}
	e.svc = e.newService()
	return e
}

func (e *lcEnv) newService() *Service {
	return NewService(Options{Config: e.Cfg, Pods: e.Pods, Images: e.Images, Log: quietLog(), Metrics: e.Metrics})
}

// rebuild makes a new controller and service over the same dependencies
// (after a test changed an Env setting such as EventBuffer or Metrics).
func (e *lcEnv) rebuild() {
	e.Pods = e.NewPods()
	e.svc = e.newService()
}

// restart simulates vmpod being killed and started again (Env.Restart) and
// builds a new Service. Recover is the caller's.
func (e *lcEnv) restart(t *testing.T) *Service {
	t.Helper()
	e.Restart(t)
	e.svc = e.newService()
	return e.svc
}

// domainName is the libvirt domain of a container.
func domainName(id string) string { return lifecycle.DomainName(id) }

// serialSocket is where a VM's serial console listens.
func serialSocket(runDir string) string { return filepath.Join(runDir, "serial.sock") }

func lcPod(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		LogDirectory: "/var/log/pods/default_" + name + "_uid-" + name,
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{},
	}
}

func lcContainer(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "debian:12"},
		LogPath:  name + "/0.log",
		Labels:   map[string]string{"container": name},
	}
}

func (e *lcEnv) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	return resp.PodSandboxId
}

func (e *lcEnv) create(sbID string, sb *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig) (string, error) {
	resp, err := e.svc.CreateContainer(lcQuiet(context.Background()),
		&runtimeapi.CreateContainerRequest{PodSandboxId: sbID, Config: c, SandboxConfig: sb})
	return resp.GetContainerId(), err
}

func (e *lcEnv) mustCreate(t *testing.T, sbID string, sb *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig) string {
	t.Helper()
	id, err := e.create(sbID, sb, c)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	return id
}

func (e *lcEnv) mustStart(t *testing.T, id string) {
	t.Helper()
	if _, err := e.svc.StartContainer(lcCtx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

// runningVM runs pod name and a started container "vm" in it.
func (e *lcEnv) runningVM(t *testing.T, name string) (sbID, id string) {
	t.Helper()
	pod := lcPod(name)
	sbID = e.runPod(t, pod)
	id = e.mustCreate(t, sbID, pod, lcContainer("vm"))
	e.mustStart(t, id)
	return sbID, id
}

func (e *lcEnv) status(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := e.svc.ContainerStatus(lcCtx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus(%s): %v", id, err)
	}
	return resp.Status
}

func (e *lcEnv) podState(t *testing.T, id string) runtimeapi.PodSandboxState {
	t.Helper()
	resp, err := e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("PodSandboxStatus(%s): %v", id, err)
	}
	return resp.Status.State
}

func (e *lcEnv) listContainers(t *testing.T, f *runtimeapi.ContainerFilter) []string {
	t.Helper()
	resp, err := e.svc.ListContainers(lcCtx(t), &runtimeapi.ListContainersRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range resp.Containers {
		ids = append(ids, c.Id)
	}
	return ids
}

func (e *lcEnv) listPods(t *testing.T, f *runtimeapi.PodSandboxFilter) []string {
	t.Helper()
	resp, err := e.svc.ListPodSandbox(lcCtx(t), &runtimeapi.ListPodSandboxRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range resp.Items {
		ids = append(ids, p.Id)
	}
	return ids
}

// lcQuiet gives ctx a logger that discards: the RPCs log through the
// context's logger (the interceptor puts one there), else slog.Default.
func lcQuiet(ctx context.Context) context.Context { return logging.With(ctx, quietLog()) }

// lcCtx is the test's context with a quiet logger.
func lcCtx(t *testing.T) context.Context { return lcQuiet(t.Context()) }

// wantCode checks the gRPC code err maps to at the boundary and that its
// message contains each of the words.
func wantCode(t *testing.T, err error, code codes.Code, words ...string) {
	t.Helper()
	if got := status.Code(toGRPC(err)); got != code {
		t.Fatalf("error %v maps to %v, want %v", err, got, code)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
