package cri

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	evCreated = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
	evStarted = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	evStopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
	evDeleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
)

// fakeEventStream is the server side of one GetContainerEvents stream.
// Sent events arrive on events; while stuck, Send blocks until the stream's
// context ends, as with a client that stopped reading.
type fakeEventStream struct {
	grpc.ServerStream // nil: only Context and Send are used
	ctx               context.Context
	events            chan *runtimeapi.ContainerEventResponse
	stuck             bool
}

func (f *fakeEventStream) Context() context.Context { return f.ctx }

func (f *fakeEventStream) Send(ev *runtimeapi.ContainerEventResponse) error {
	if f.stuck {
		<-f.ctx.Done()
		return f.ctx.Err()
	}
	select {
	case f.events <- ev:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

// subscription is a running GetContainerEvents call.
type subscription struct {
	stream *fakeEventStream
	ended  chan error // GetContainerEvents' result, gRPC-mapped
	cancel context.CancelFunc
}

// subscribe starts GetContainerEvents and waits until it is subscribed.
func (e *lcEnv) subscribe(t *testing.T, stuck bool) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(lcCtx(t))
	t.Cleanup(cancel)
	s := &subscription{
		stream: &fakeEventStream{ctx: ctx, events: make(chan *runtimeapi.ContainerEventResponse, 1000), stuck: stuck},
		ended:  make(chan error, 1), cancel: cancel,
	}
	before := e.Pods.Subscribers()
	go func() { s.ended <- toGRPC(e.svc.GetContainerEvents(&runtimeapi.GetEventsRequest{}, s.stream)) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.Pods.Subscribers() == before {
		if time.Now().After(deadline) {
			t.Fatal("GetContainerEvents did not subscribe")
		}
		time.Sleep(time.Millisecond)
	}
	return s
}

// next returns the next event or fails after a while.
func (s *subscription) next(t *testing.T) *runtimeapi.ContainerEventResponse {
	t.Helper()
	select {
	case ev := <-s.stream.events:
		return ev
	case err := <-s.ended:
		t.Fatalf("event stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return nil
}

// expect reads the next event and checks its ID and type.
func (s *subscription) expect(t *testing.T, id string, typ runtimeapi.ContainerEventType) *runtimeapi.ContainerEventResponse {
	t.Helper()
	ev := s.next(t)
	if ev.ContainerId != id || ev.ContainerEventType != typ {
		t.Fatalf("event = %s %s, want %s %s", short(ev.ContainerId), ev.ContainerEventType, short(id), typ)
	}
	return ev
}

// none checks that no event is pending.
func (s *subscription) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-s.stream.events:
		t.Fatalf("unexpected event %s %s", short(ev.ContainerId), ev.ContainerEventType)
	case <-time.After(20 * time.Millisecond):
	}
}

func short(id string) string { return id[:min(len(id), 8)] }

// statesOf summarises an event's container statuses as "id:STATE(exit)".
func statesOf(ev *runtimeapi.ContainerEventResponse) string {
	var out []string
	for _, st := range ev.ContainersStatuses {
		s := short(st.Id) + ":" + strings.TrimPrefix(st.State.String(), "CONTAINER_")
		if st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			s += fmt.Sprintf("(%d %s)", st.ExitCode, st.Reason)
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func TestContainerEventsLifecycle(t *testing.T) {
	e := newLCEnv(t)
	sub := e.subscribe(t, false)
	ctx := lcCtx(t)
	pod := lcPod("web")

	sbID := e.runPod(t, pod)
	for _, typ := range []runtimeapi.ContainerEventType{evCreated, evStarted} {
		ev := sub.expect(t, sbID, typ)
		if ev.PodSandboxStatus.GetId() != sbID || ev.PodSandboxStatus.GetMetadata().GetUid() != "uid-web" ||
			ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY || len(ev.ContainersStatuses) != 0 {
			t.Fatalf("sandbox %s event: %+v", typ, ev)
		}
		if ev.CreatedAt != lcT0.UnixNano() {
			t.Fatalf("created_at = %d, want the clock's %d", ev.CreatedAt, lcT0.UnixNano())
		}
	}

	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	if ev := sub.expect(t, id, evCreated); statesOf(ev) != short(id)+":CREATED" || ev.PodSandboxStatus.GetId() != sbID {
		t.Fatalf("created event: statuses %s, sandbox %s", statesOf(ev), ev.PodSandboxStatus.GetId())
	}
	e.Clock.Set(lcT0.Add(time.Minute))
	e.mustStart(t, id)
	if ev := sub.expect(t, id, evStarted); statesOf(ev) != short(id)+":RUNNING" || ev.CreatedAt != lcT0.Add(time.Minute).UnixNano() {
		t.Fatalf("started event: statuses %s at %d", statesOf(ev), ev.CreatedAt)
	}
	sub.none(t)

	// The guest powers itself off; the monitor's next check finds it.
	e.Clock.Set(lcT0.Add(time.Hour))
	e.LV.GuestPowerOff(domainName(id))
	e.Pods.CheckRunning(ctx)
	ev := sub.expect(t, id, evStopped)
	if got := statesOf(ev); got != short(id)+":EXITED(0 Completed)" || ev.CreatedAt != lcT0.Add(time.Hour).UnixNano() {
		t.Fatalf("stopped event: statuses %s at %d", got, ev.CreatedAt)
	}
	// Seeing the exit again (ContainerStatus, StopContainer) sends nothing.
	e.status(t, id)
	if _, err := e.svc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	sub.none(t)

	// The kubelet's restart: attempt 1 while attempt 0 is kept.
	c1 := lcContainer("vm")
	c1.Metadata.Attempt = 1
	id1 := e.mustCreate(t, sbID, pod, c1)
	if ev := sub.expect(t, id1, evCreated); len(ev.ContainersStatuses) != 2 {
		t.Fatalf("the event after a restart lists %s, want both attempts", statesOf(ev))
	}
	e.mustStart(t, id1)
	sub.expect(t, id1, evStarted)

	if _, err := e.svc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if ev := sub.expect(t, id, evDeleted); statesOf(ev) != short(id1)+":RUNNING" {
		t.Fatalf("deleted event lists %s, want only the remaining container", statesOf(ev))
	}
	// A repeated remove of a removed container sends nothing.
	if _, err := e.svc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	sub.none(t)

	// StopPodSandbox: the sandbox is NOTREADY, then its VM is destroyed.
	if _, err := e.svc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	if ev := sub.expect(t, sbID, evStopped); ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("sandbox stopped event: sandbox %v", ev.PodSandboxStatus.GetState())
	}
	if ev := sub.expect(t, id1, evStopped); statesOf(ev) != short(id1)+":EXITED(137 Killed)" {
		t.Fatalf("stopped event of the pod's VM: %s", statesOf(ev))
	}
	if _, err := e.svc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	sub.none(t)

	// RemovePodSandbox: the container, then the sandbox, whose DELETED
	// event still carries its status (the kubelet drops the pod on it).
	if _, err := e.svc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, id1, evDeleted)
	ev = sub.expect(t, sbID, evDeleted)
	if ev.PodSandboxStatus.GetId() != sbID || ev.PodSandboxStatus.GetMetadata().GetUid() != "uid-web" ||
		ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || len(ev.ContainersStatuses) != 0 {
		t.Fatalf("sandbox deleted event: %+v", ev)
	}
	sub.none(t)

	// The client going away ends the call without an error.
	sub.cancel()
	if err := <-sub.ended; err != nil {
		t.Fatalf("GetContainerEvents after the client left: %v", err)
	}
	if n := e.Pods.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left", n)
	}
}

// Every way a VM stops sends one STOPPED event carrying the exit.
func TestContainerEventsStopKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, e *lcEnv, id string)
		want string
	}{
		{"guest crash", func(t *testing.T, e *lcEnv, id string) {
			e.LV.Crash(domainName(id))
			e.Pods.CheckRunning(lcCtx(t))
		}, "EXITED(139 Crashed)"},
		{"destroyed outside vmpod, seen by ContainerStatus", func(t *testing.T, e *lcEnv, id string) {
			if err := e.LV.Destroy(context.Background(), domainName(id)); err != nil {
				t.Fatal(err)
			}
			e.status(t, id)
		}, "EXITED(137 Killed)"},
		{"StopContainer, guest obeys ACPI", func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
				t.Fatal(err)
			}
		}, "EXITED(0 Completed)"},
		{"RemoveContainer of a running VM", func(t *testing.T, e *lcEnv, id string) {
			if _, err := e.svc.RemoveContainer(lcCtx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		}, "EXITED(137 Killed)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLCEnv(t)
			_, id := e.runningVM(t, "web")
			sub := e.subscribe(t, false)
			tc.stop(t, e, id)
			if ev := sub.expect(t, id, evStopped); statesOf(ev) != short(id)+":"+tc.want {
				t.Fatalf("stopped event: %s, want %s", statesOf(ev), tc.want)
			}
			if strings.HasPrefix(tc.name, "RemoveContainer") {
				sub.expect(t, id, evDeleted)
			}
			sub.none(t)
		})
	}
}

// A subscriber that stopped reading is disconnected; lifecycle calls and
// other subscribers carry on.
func TestSlowEventSubscriberDoesNotBlock(t *testing.T) {
	e := newLCEnv(t)
	e.EventBuffer = 2
	m := withMetrics(e) // rebuilds the controller
	slow := e.subscribe(t, true)
	fast := e.subscribe(t, false)

	sbID, id := e.runningVM(t, "web") // 4 events: more than the slow one's buffer
	start := time.Now()
	if _, err := e.svc.StopContainer(lcCtx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("StopContainer took %v with a stuck subscriber", d)
	}
	select {
	case err := <-slow.ended:
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "relist") {
			t.Fatalf("stuck stream ended with %v, want ResourceExhausted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stuck subscriber was not disconnected")
	}
	for _, want := range []struct {
		id  string
		typ runtimeapi.ContainerEventType
	}{{sbID, evCreated}, {sbID, evStarted}, {id, evCreated}, {id, evStarted}, {id, evStopped}} {
		fast.expect(t, want.id, want.typ)
	}
	if n := e.Pods.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers, want the fast one only", n)
	}
	fams := scrape(t, m)
	if v := value(t, fams, "vmpod_container_event_subscribers_dropped_total", nil); v != 1 {
		t.Fatalf("dropped subscribers metric = %v", v)
	}
	if v := value(t, fams, "vmpod_container_event_subscribers", nil); v != 1 {
		t.Fatalf("subscribers gauge = %v", v)
	}
}

func TestEventStreamsEndOnShutdown(t *testing.T) {
	e := newLCEnv(t)
	sub := e.subscribe(t, false)
	e.svc.CloseEventStreams()
	select {
	case err := <-sub.ended:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after CloseEventStreams")
	}
	stream := &fakeEventStream{ctx: lcCtx(t), events: make(chan *runtimeapi.ContainerEventResponse, 1)}
	if err := toGRPC(e.svc.GetContainerEvents(&runtimeapi.GetEventsRequest{}, stream)); status.Code(err) != codes.Unavailable {
		t.Fatalf("subscribing after shutdown: %v, want Unavailable", err)
	}
	// Lifecycle calls go on without subscribers.
	e.runningVM(t, "web")
}

// GetContainerEvents over a real gRPC server with the boundary layer: the
// stream waits for the readiness gate, then delivers events.
func TestContainerEventsOverGRPC(t *testing.T) {
	e := newLCEnv(t)
	gate := NewGate()
	ic := &Interceptors{Log: quietLog(), Gate: gate}
	srv := grpc.NewServer(grpc.UnaryInterceptor(ic.Unary), grpc.StreamInterceptor(ic.Stream))
	runtimeapi.RegisterRuntimeServiceServer(srv, e.svc)
	sock := filepath.Join(e.RunRoot, "g.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := runtimeapi.NewRuntimeServiceClient(conn)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := e.Pods.Subscribers(); n != 0 {
		t.Fatalf("subscribed before the readiness gate opened (%d)", n)
	}
	gate.Open()
	for deadline := time.Now().Add(5 * time.Second); e.Pods.Subscribers() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber after the gate opened")
		}
	}
	resp, err := client.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []runtimeapi.ContainerEventType{evCreated, evStarted} {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.ContainerId != resp.PodSandboxId || ev.ContainerEventType != typ || ev.PodSandboxStatus.GetMetadata().GetName() != "web" {
			t.Fatalf("event = %s %s %v", short(ev.ContainerId), ev.ContainerEventType, ev.PodSandboxStatus.GetMetadata())
		}
	}
	// Shutdown ends the stream with Unavailable, so GracefulStop need not wait.
	e.svc.CloseEventStreams()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv after shutdown: %v, want Unavailable", err)
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop waits after the event streams were closed")
	}
}

// A real gRPC client that stops reading: once HTTP/2 flow control stops
// vmpod's Send, the subscriber's buffer fills and the stream is ended,
// which also frees the blocked Send; the client reads ResourceExhausted
// after what it had buffered.
func TestStuckGRPCClientIsDisconnected(t *testing.T) {
	e := newLCEnv(t)
	e.EventBuffer = 4
	e.rebuild()
	gate := NewGate()
	gate.Open()
	ic := &Interceptors{Log: quietLog(), Gate: gate}
	srv := grpc.NewServer(grpc.StreamInterceptor(ic.Stream))
	runtimeapi.RegisterRuntimeServiceServer(srv, e.svc)
	sock := filepath.Join(e.RunRoot, "g.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(context.Background(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); e.Pods.Subscribers() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber")
		}
	}
	// Big events (a pod with a 256 KiB annotation: every event carries
	// its status) fill the flow-control windows quickly; publishing never
	// waits, so the pods' calls go on.
	big := strings.Repeat("x", 256<<10)
	for i := 0; i < 100 && e.Pods.Subscribers() > 0; i++ {
		// A new config each time: the events keep the one they were given.
		pod := lcPod("big")
		pod.Annotations["example.com/big"] = big
		pod.Metadata.Attempt = uint32(i)
		id := e.runPod(t, pod)
		start := time.Now()
		if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("RemovePodSandbox took %v with a stuck subscriber", d)
		}
	}
	if e.Pods.Subscribers() != 0 {
		t.Fatal("the client that stopped reading is still subscribed")
	}
	var n int
	for {
		_, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v after %d events, want ResourceExhausted", err, n)
			}
			break
		}
		n++
	}
	// The handler and its sender are gone: GracefulStop does not wait.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop waits: the stuck stream's handler did not return")
	}
}
