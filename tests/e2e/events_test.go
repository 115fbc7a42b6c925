package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventStream is a GetContainerEvents subscription over the CRI socket, as
// the kubelet's Evented PLEG opens it.
type eventStream struct {
	t      *testing.T
	events chan *runtimeapi.ContainerEventResponse
	ended  chan error
	cancel context.CancelFunc
}

func subscribeEvents(t *testing.T, socket string) *eventStream {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s := &eventStream{t: t, events: make(chan *runtimeapi.ContainerEventResponse, 100), ended: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				s.ended <- err
				return
			}
			s.events <- ev
		}
	}()
	return s
}

// expect waits for the next event and checks its ID and type.
func (s *eventStream) expect(id string, typ runtimeapi.ContainerEventType, timeout time.Duration) *runtimeapi.ContainerEventResponse {
	s.t.Helper()
	select {
	case ev := <-s.events:
		if ev.ContainerId != id || ev.ContainerEventType != typ {
			s.t.Fatalf("event %s %s, want %s %s", ev.ContainerId, ev.ContainerEventType, id, typ)
		}
		return ev
	case err := <-s.ended:
		s.t.Fatalf("event stream ended waiting for %s: %v", typ, err)
	case <-time.After(timeout):
		s.t.Fatalf("no %s event for %s within %v", typ, id, timeout)
	}
	return nil
}

// scrapeMetrics returns the text exposition as "name{labels}" -> value.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestEventsAndMetrics follows a VM pod through the event stream (a Go CRI
// client and `crictl events` at once) and the metrics endpoint; the guest
// powers itself off from its console and the STOPPED event must follow.
func TestEventsAndMetrics(t *testing.T) {
	guest := guestImage(t)
	srv := newFileServer(t)
	run(t, "cp", guest, srv.path("guest.qcow2"))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_METRICS_ADDRESS=" + metricsAddr}})
	d.writeTranslations("guest.toml", fmt.Sprintf("[[translations]]\nname = \"guest\"\nurl = \"%s/guest.qcow2\"\n", srv.URL))
	d.mustCrictl("pull", "guest")
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	t.Cleanup(e.cleanupAll)
	if !strings.Contains(d.Log(), "serving metrics") {
		t.Fatalf("the daemon does not log the metrics address:\n%s", d.LogTail(20))
	}

	events := subscribeEvents(t, d.Socket())
	// crictl's own subscriber, alongside.
	crictlOut := &lockedBuffer{}
	crictlEvents := exec.Command("crictl", "--config", d.crictlConfig, "events")
	crictlEvents.Stdout, crictlEvents.Stderr = crictlOut, crictlOut
	if err := crictlEvents.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crictlEvents.Process.Kill(); crictlEvents.Wait() })
	waitMetric(t, metricsAddr, "vmpod_container_event_subscribers", 2, 10*time.Second)

	f := e.podConfigs("events", 0, nil)
	podID, ctrID := e.startVM(f)
	for _, want := range []struct {
		id  string
		typ runtimeapi.ContainerEventType
	}{
		{podID, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT},
		{podID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT},
		{ctrID, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT},
		{ctrID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT},
	} {
		ev := events.expect(want.id, want.typ, 10*time.Second)
		if ev.PodSandboxStatus.GetMetadata().GetUid() != "uid-events" {
			t.Fatalf("%s event without the pod's sandbox status: %+v", want.typ, ev.PodSandboxStatus)
		}
	}
	waitLog(t, f.logPath, readyRE, bootTimeout)

	m := scrapeMetrics(t, metricsAddr)
	for key, want := range map[string]float64{
		`vmpod_vms{state="running"}`:                                                  1,
		`vmpod_pod_sandboxes{state="ready"}`:                                          1,
		`vmpod_vm_start_duration_seconds_count`:                                       1,
		`vmpod_image_pulls_total{result="OK"}`:                                        1,
		`vmpod_cri_request_duration_seconds_count{code="OK",method="StartContainer"}`: 1,
		`vmpod_cri_request_duration_seconds_count{code="OK",method="RunPodSandbox"}`:  1,
		`vmpod_container_events_total{type="started"}`:                                2,
		`vmpod_container_event_subscribers`:                                           2,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	if b := m["vmpod_image_pull_downloaded_bytes_total"]; b < 1<<20 {
		t.Errorf("downloaded bytes = %v, want the guest image's size", b)
	}
	if s := m["vmpod_vm_start_duration_seconds_sum"]; s <= 0 || s > 60 {
		t.Errorf("VM start took %v s?", s)
	}
	if _, ok := m["process_resident_memory_bytes"]; !ok {
		t.Error("no process metrics")
	}

	// The guest powers itself off from its console: the monitor sees the
	// domain shut off and the STOPPED event follows, with the exit.
	a := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	a.send("poweroff")
	start := time.Now()
	ev := events.expect(ctrID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, 90*time.Second)
	t.Logf("STOPPED event %v after the poweroff was typed", time.Since(start).Round(time.Millisecond))
	if len(ev.ContainersStatuses) != 1 || ev.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_EXITED ||
		ev.ContainersStatuses[0].ExitCode != 0 || ev.ContainersStatuses[0].Reason != "Completed" {
		t.Fatalf("STOPPED event statuses: %+v", ev.ContainersStatuses)
	}
	if ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox in the STOPPED event: %v", ev.PodSandboxStatus.GetState())
	}
	a.close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(crictlOut.String(), "CONTAINER_STOPPED_EVENT") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if out := crictlOut.String(); !strings.Contains(out, ctrID) || !strings.Contains(out, "CONTAINER_STOPPED_EVENT") {
		t.Fatalf("crictl events did not show the STOPPED event:\n%s", tail(out, 40))
	}
	m = scrapeMetrics(t, metricsAddr)
	if m[`vmpod_vms{state="running"}`] != 0 || m[`vmpod_vms{state="exited"}`] != 1 {
		t.Errorf("after poweroff: running %v exited %v", m[`vmpod_vms{state="running"}`], m[`vmpod_vms{state="exited"}`])
	}

	// Removal: the container, then the sandbox (stopped, deleted).
	e.mustCrictl("rm", ctrID)
	events.expect(ctrID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, 30*time.Second)
	e.mustCrictl("stopp", podID)
	events.expect(podID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, 30*time.Second)
	e.mustCrictl("rmp", podID)
	if ev := events.expect(podID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, 30*time.Second); ev.PodSandboxStatus.GetId() != podID {
		t.Fatalf("sandbox DELETED event without its status: %+v", ev.PodSandboxStatus)
	}

	// SIGTERM with subscribers connected: their streams end with
	// Unavailable and the daemon stops without waiting for them.
	start = time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-events.ended:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("event stream ended with %v on shutdown, want Unavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("event stream still open 20s after SIGTERM")
	}
	select {
	case <-d.Exited():
		if err := d.ExitErr(); err != nil {
			t.Fatalf("vmpod exited with %v\n%s", err, d.LogTail(30))
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("vmpod still running 20s after SIGTERM (the event streams held GracefulStop?)\n%s", d.LogTail(30))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown took %v with event subscribers", took)
	}
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("metrics still served after vmpod stopped")
	}
}

// waitMetric polls the metrics endpoint until series key has value want.
func waitMetric(t *testing.T, addr, key string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if v, ok := scrapeMetrics(t, addr)[key]; ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %v", key, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedBuffer collects a subprocess's output for concurrent reading.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
