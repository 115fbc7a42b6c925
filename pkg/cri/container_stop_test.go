package cri

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle"
)

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
