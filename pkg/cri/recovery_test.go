package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/libvirttools/fake"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/store"
)

// Recovery tests build a Service, bring VMs into some state, change what
// libvirt has behind its back as if vmpod were down, then build a second
// Service over the same metadata store and the same fake libvirt (a vmpod
// restart) and call Recover.

// lcDefine defines a bare domain in the fake, started when start is set.
func lcDefine(t *testing.T, lv *fake.Connection, name, uuid string, start bool) {
	t.Helper()
	lcDefineOwned(t, lv, name, uuid, "", start)
}

// lcDefineOwned defines a domain whose vmpod metadata names instance (no
// metadata when instance is empty).
func lcDefineOwned(t *testing.T, lv *fake.Connection, name, uuid, instance string, start bool) {
	t.Helper()
	ctx := context.Background()
	meta := ""
	if instance != "" {
		meta = fmt.Sprintf(`<metadata><vmpod xmlns="https://vmpod.dev/xmlns/domain/1"><instance id="%s"/><sandbox id="gone"/></vmpod></metadata>`, instance)
	}
	if err := lv.Define(ctx, fmt.Sprintf(`<domain type="qemu"><name>%s</name><uuid>%s</uuid>%s</domain>`, name, uuid, meta)); err != nil {
		t.Fatal(err)
	}
	if start {
		if err := lv.Start(ctx, name, false); err != nil {
			t.Fatal(err)
		}
	}
}

// writeCreatingRecord leaves what a vmpod killed in the middle of
// CreateContainer leaves: a CREATING record, the container's directories
// with its overlay, and a defined domain.
func writeCreatingRecord(t *testing.T, e *lcEnv, sbID string, pod *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig) lifecycle.ContainerRecord {
	t.Helper()
	id := strings.Repeat("c7", 32)
	raw, err := protojson.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.Pods.ContainersDir(), id)
	rec := lifecycle.ContainerRecord{
		ID: id, SandboxID: sbID, Name: fmt.Sprintf("%s_%s_%s_%s_%d", c.Metadata.Name, pod.Metadata.Name, pod.Metadata.Namespace, pod.Metadata.Uid, c.Metadata.Attempt), State: lifecycle.ContainerCreating,
		ImageName: c.Image.Image, ImageRef: lcImageDebian.ID, Domain: domainName(id), Dir: dir,
		RunDir: filepath.Join(e.Pods.RunDir(), id[:16]), RootDisk: filepath.Join(dir, "root.qcow2"),
		CreatedAt: lcT0.UnixNano(), Config: raw,
	}
	for _, d := range []string{rec.Dir, rec.RunDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(rec.RootDisk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.Meta.Put(store.Containers, id, rec); err != nil {
		t.Fatal(err)
	}
	lcDefine(t, e.LV, rec.Domain, lifecycle.DomainUUID(id), false)
	return rec
}

func TestRecoverAfterRestart(t *testing.T) {
	e := newLCEnv(t)
	ctx := context.Background()

	// Before the restart.
	webSB, webVM := e.runningVM(t, "web")            // runs through the restart
	dbSB, dbVM := e.runningVM(t, "db")               // powers off while vmpod is down
	_, crashVM := e.runningVM(t, "crash")            // crashes while vmpod is down
	_, goneVM := e.runningVM(t, "gone")              // undefined while vmpod is down
	orphanSB, orphanVM := e.runningVM(t, "orphaned") // its sandbox record is lost
	_, doneVM := e.runningVM(t, "done")              // exited before the restart
	e.LV.GuestPowerOff(domainName(doneVM))
	e.status(t, doneVM)
	idlePod := lcPod("idle") // created, never started
	idleVM := e.mustCreate(t, e.runPod(t, idlePod), idlePod, lcContainer("vm"))
	lostPod := lcPod("lost") // created; its domain is undefined while vmpod is down
	lostVM := e.mustCreate(t, e.runPod(t, lostPod), lostPod, lcContainer("vm"))
	lostRec := e.Record(t, lostVM)
	startingPod := lcPod("starting") // vmpod died between Start(paused) and the RUNNING record
	startingVM := e.mustCreate(t, e.runPod(t, startingPod), startingPod, lcContainer("vm"))
	if err := e.LV.Start(ctx, domainName(startingVM), true); err != nil {
		t.Fatal(err)
	}
	halfPod := lcPod("half") // vmpod died in the middle of CreateContainer
	halfSB := e.runPod(t, halfPod)
	half := writeCreatingRecord(t, e, halfSB, halfPod, lcContainer("vm"))
	orphanDom := lifecycle.DomainPrefix + strings.Repeat("0f", 32) // vmpod's name, no record
	lcDefineOwned(t, e.LV, orphanDom, "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f", e.Meta.InstanceID(), true)
	// Another vmpod's domain on the same libvirtd: never touched.
	otherDom := lifecycle.DomainPrefix + strings.Repeat("ab", 32)
	lcDefineOwned(t, e.LV, otherDom, "abababab-abab-4bab-8bab-abababababab", "another-vmpod", true)
	foreignDom := "web-server" // not vmpod's
	lcDefine(t, e.LV, foreignDom, "11111111-2222-4333-8444-555555555555", true)
	webRec := e.Record(t, webVM)
	doneBefore := e.status(t, doneVM)

	// While vmpod is down.
	e.LV.GuestPowerOff(domainName(dbVM))
	e.LV.Crash(domainName(crashVM))
	if err := e.LV.Destroy(ctx, domainName(goneVM)); err != nil {
		t.Fatal(err)
	}
	if err := e.LV.Undefine(ctx, domainName(goneVM)); err != nil {
		t.Fatal(err)
	}
	if err := e.LV.Undefine(ctx, domainName(lostVM)); err != nil {
		t.Fatal(err)
	}
	if err := e.Meta.Delete(store.Sandboxes, orphanSB); err != nil {
		t.Fatal(err)
	}
	orphanRec := e.Record(t, orphanVM)
	consolesBefore := len(e.Consoles.All())

	e.restart(t)
	n := len(e.LV.Calls())
	t3 := lcT0.Add(3 * time.Hour)
	e.Clock.Set(t3)
	if err := e.Pods.Recover(lcCtx(t)); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	calls := e.CallsSince(n)
	newConsoles := e.Consoles.All()[consolesBefore:]

	t.Run("running VM keeps running", func(t *testing.T) {
		st := e.status(t, webVM)
		if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != webRec.StartedAt {
			t.Errorf("status = %v started %d, want RUNNING started %d", st.State, st.StartedAt, webRec.StartedAt)
		}
		if d := e.DomainState(t, domainName(webVM)); d.State != libvirttools.DomainRunning {
			t.Errorf("domain is %v", d.State)
		}
		for _, c := range calls {
			if strings.Contains(c, domainName(webVM)) && !strings.HasPrefix(c, "Status ") {
				t.Errorf("recovery called %q on a running VM", c)
			}
		}
		if len(newConsoles) != 1 {
			t.Fatalf("recovery made %d consoles, want 1 (for the running VM)", len(newConsoles))
		}
		con := newConsoles[0]
		if con.Socket != serialSocket(webRec.RunDir) || con.LogPath != webRec.LogPath || con.IsClosed() {
			t.Errorf("console on %s logging to %s (closed %v), want %s and %s",
				con.Socket, con.LogPath, con.IsClosed(), serialSocket(webRec.RunDir), webRec.LogPath)
		}
		// The new vmpod controls it.
		if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: webVM, Timeout: 10}); err != nil {
			t.Fatal(err)
		}
		if st := e.status(t, webVM); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 {
			t.Errorf("after stop: %v exit %d", st.State, st.ExitCode)
		}
		if !con.IsClosed() {
			t.Error("reattached console not closed when the VM stopped")
		}
	})

	t.Run("VMs that stopped while vmpod was down", func(t *testing.T) {
		for _, tc := range []struct {
			id     string
			code   int32
			reason string
		}{
			{dbVM, 0, reasonCompleted},
			{crashVM, exitCrashed, reasonCrashed},
			{goneVM, exitKilled, reasonKilled},
		} {
			st := e.status(t, tc.id)
			if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != tc.code || st.Reason != tc.reason || st.FinishedAt != t3.UnixNano() {
				t.Errorf("%s: %v exit %d %q finished %d, want EXITED %d %q %d",
					tc.id[:8], st.State, st.ExitCode, st.Reason, st.FinishedAt, tc.code, tc.reason, t3.UnixNano())
			}
			if rec := e.Record(t, tc.id); rec.State != lifecycle.ContainerExited {
				t.Errorf("%s: stored state %s", tc.id[:8], rec.State)
			}
		}
		if st := e.status(t, doneVM); st.State != doneBefore.State || st.ExitCode != doneBefore.ExitCode || st.FinishedAt != doneBefore.FinishedAt {
			t.Errorf("exited container changed: %+v -> %+v", doneBefore, st)
		}
	})

	t.Run("created containers", func(t *testing.T) {
		if st := e.status(t, idleVM); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("idle container is %v", st.State)
		}
		if d := e.DomainState(t, domainName(idleVM)); d.State != libvirttools.DomainShutoff {
			t.Errorf("idle domain is %v", d.State)
		}
		// Half-started: the domain is stopped back, and the container starts.
		if !slices.Contains(calls, "Destroy "+domainName(startingVM)) {
			t.Errorf("the half-started domain was not destroyed: %v", calls)
		}
		if st := e.status(t, startingVM); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("half-started container is %v", st.State)
		}
		e.mustStart(t, startingVM)
		// Domain gone: the container is dropped.
		_, err := e.svc.ContainerStatus(lcCtx(t), &runtimeapi.ContainerStatusRequest{ContainerId: lostVM})
		wantCode(t, err, codes.NotFound)
		for _, d := range []string{lostRec.Dir, lostRec.RunDir} {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left (stat: %v)", d, err)
			}
		}
	})

	t.Run("CREATING record cleaned up", func(t *testing.T) {
		if _, _, ok := e.LV.Domain(half.Domain); ok {
			t.Error("domain still defined")
		}
		var rec lifecycle.ContainerRecord
		if err := e.Meta.Get(store.Containers, half.ID, &rec); !errdefs.IsNotFound(err) {
			t.Errorf("record still there (%v): %+v", err, rec)
		}
		for _, p := range []string{half.RootDisk, half.Dir, half.RunDir} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left (stat: %v)", p, err)
			}
		}
		// Its name is free: the kubelet's retry creates it.
		id := e.mustCreate(t, halfSB, halfPod, lcContainer("vm"))
		if id == half.ID {
			t.Error("the retry got the half-created container's ID")
		}
	})

	t.Run("container of a lost sandbox dropped", func(t *testing.T) {
		if _, _, ok := e.LV.Domain(orphanRec.Domain); ok {
			t.Error("its domain is still defined")
		}
		if ids := e.listContainers(t, &runtimeapi.ContainerFilter{Id: orphanVM}); len(ids) != 0 {
			t.Errorf("still listed: %v", ids)
		}
	})

	t.Run("vmpod domain without record removed", func(t *testing.T) {
		if _, _, ok := e.LV.Domain(orphanDom); ok {
			t.Error("still defined")
		}
		i, j := slices.Index(calls, "Destroy "+orphanDom), slices.Index(calls, "Undefine "+orphanDom)
		if i < 0 || j < i {
			t.Errorf("calls = %v; want Destroy then Undefine of %s", calls, orphanDom)
		}
	})
	t.Run("another vmpod's domain untouched", func(t *testing.T) {
		if _, st, ok := e.LV.Domain(otherDom); !ok || st.State != libvirttools.DomainRunning {
			t.Fatalf("another instance's domain: defined %v, state %v", ok, st.State)
		}
	})

	t.Run("foreign domain untouched", func(t *testing.T) {
		if d := e.DomainState(t, foreignDom); d.State != libvirttools.DomainRunning {
			t.Errorf("foreign domain is %v", d.State)
		}
		for _, c := range calls {
			if strings.Contains(c, foreignDom) {
				t.Errorf("recovery called %q", c)
			}
		}
	})

	t.Run("lists", func(t *testing.T) {
		wantCs := slices.Sorted(slices.Values([]string{webVM, dbVM, crashVM, goneVM, doneVM, idleVM, startingVM}))
		gotCs := e.listContainers(t, nil)
		for _, id := range wantCs {
			if !slices.Contains(gotCs, id) {
				t.Errorf("container %s not listed after recovery", id[:8])
			}
		}
		for _, id := range []string{lostVM, half.ID, orphanVM} {
			if slices.Contains(gotCs, id) {
				t.Errorf("container %s listed after recovery", id[:8])
			}
		}
		if pods := e.listPods(t, nil); len(pods) != 9 || slices.Contains(pods, orphanSB) {
			t.Errorf("sandboxes after recovery = %d: %v", len(pods), pods)
		}
	})

	t.Run("names reserved again", func(t *testing.T) {
		_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		wantCode(t, err, codes.AlreadyExists)
		// db's VM exited, so only the name reservation refuses the same attempt.
		_, err = e.create(dbSB, lcPod("db"), lcContainer("vm"))
		wantCode(t, err, codes.AlreadyExists)
		next := lcContainer("vm")
		next.Metadata.Attempt = 1
		e.mustCreate(t, dbSB, lcPod("db"), next)
		if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: webSB}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: webSB}); err != nil {
			t.Fatal(err)
		}
		e.runPod(t, lcPod("web"))
	})
}

// TestRecoverWaitsForLibvirt: recovery needs libvirt; it waits while
// libvirtd is unreachable and gives up only when its context does.
func TestRecoverWaitsForLibvirt(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	e.LV.SetDown(true)
	e.restart(t)
	ctx, cancel := context.WithTimeout(lcCtx(t), 200*time.Millisecond)
	defer cancel()
	if err := e.Pods.Recover(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recover with libvirt down = %v, want DeadlineExceeded", err)
	}
	if pods := e.listPods(t, nil); len(pods) != 0 {
		t.Errorf("sandboxes loaded before libvirt answered: %v", pods)
	}

	time.AfterFunc(100*time.Millisecond, func() { e.LV.SetDown(false) })
	start := time.Now()
	if err := e.Pods.Recover(lcCtx(t)); err != nil {
		t.Fatalf("Recover once libvirt is back: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Recover took %v after libvirt came back", took)
	}
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container is %v after recovery", st.State)
	}
}

// TestRecoverEmpty: a first start touches nothing.
func TestRecoverEmpty(t *testing.T) {
	e := newLCEnv(t)
	lcDefine(t, e.LV, "web-server", "11111111-2222-4333-8444-555555555555", true)
	n := len(e.LV.Calls())
	if err := e.Pods.Recover(lcCtx(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range e.CallsSince(n) {
		if !strings.HasPrefix(c, "Ping") && !strings.HasPrefix(c, "List ") {
			t.Errorf("recovery of nothing called %q", c)
		}
	}
	if d := e.DomainState(t, "web-server"); d.State != libvirttools.DomainRunning {
		t.Errorf("foreign domain is %v", d.State)
	}
}
