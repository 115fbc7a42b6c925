package cri

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
)

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
