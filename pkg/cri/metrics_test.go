package cri

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/guest/guesttest"
	"github.com/vmpod/vmpod/pkg/metrics"
)

// withMetrics gives the env's service a metrics registry.
func withMetrics(e *lcEnv) *metrics.Metrics {
	m := metrics.New()
	e.Metrics = m
	e.rebuild()
	return m
}

// scrape fetches /metrics through the handler, as Prometheus would.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

// value returns the value of the series of family name with labels (a
// histogram's sample count); it fails if there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no %s series with labels %v", name, labels)
	return 0
}

func TestServiceMetrics(t *testing.T) {
	e := newLCEnv(t)
	m := withMetrics(e)
	g := guesttest.New()
	e.LV.SetAgent(g.Answer)
	gate := NewGate()
	gate.Open()
	ic := &Interceptors{Log: quietLog(), Gate: gate, Metrics: m}
	ctx := lcCtx(t)
	call := func(method string, h grpc.UnaryHandler) {
		ic.Unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + method}, h)
	}

	// Pulls: one found, one not.
	e.svc.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "debian:12"}})
	e.svc.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "nope:1"}})
	// A pod with a running VM and a second, stopped sandbox.
	var sbID string
	call("RunPodSandbox", func(ctx context.Context, _ any) (any, error) {
		resp, err := e.svc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: lcPod("web")})
		sbID = resp.GetPodSandboxId()
		return resp, err
	})
	id := e.mustCreate(t, sbID, lcPod("web"), lcContainer("vm"))
	call("StartContainer", func(ctx context.Context, _ any) (any, error) {
		return e.svc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	})
	call("ContainerStatus", func(ctx context.Context, _ any) (any, error) {
		return e.svc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "unknown"})
	})
	other := e.runPod(t, lcPod("idle"))
	if _, err := e.svc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: other}); err != nil {
		t.Fatal(err)
	}
	// Execs: exit 0, exit 3, a timeout.
	for _, argv := range [][]string{{"hostname"}, {"exit3"}} {
		if _, err := e.svc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: argv}); err != nil {
			t.Fatal(err)
		}
	}
	e.svc.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep"}, Timeout: 1})
	m.AddImagePullBytes(1234)

	fams := scrape(t, m)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vmpod_cri_request_duration_seconds", map[string]string{"method": "RunPodSandbox", "code": "OK"}, 1},
		{"vmpod_cri_request_duration_seconds", map[string]string{"method": "StartContainer", "code": "OK"}, 1},
		{"vmpod_cri_request_duration_seconds", map[string]string{"method": "ContainerStatus", "code": "NotFound"}, 1},
		{"vmpod_image_pulls_total", map[string]string{"result": "OK"}, 1},
		{"vmpod_image_pulls_total", map[string]string{"result": "NotFound"}, 1},
		{"vmpod_image_pull_duration_seconds", map[string]string{"result": "OK"}, 1},
		{"vmpod_image_pull_downloaded_bytes_total", nil, 1234},
		{"vmpod_vm_start_duration_seconds", nil, 1},
		{"vmpod_exec_sync_total", map[string]string{"result": "exit_zero"}, 1},
		{"vmpod_exec_sync_total", map[string]string{"result": "exit_nonzero"}, 1},
		{"vmpod_exec_sync_total", map[string]string{"result": "timeout"}, 1},
		{"vmpod_exec_sync_duration_seconds", nil, 3},
		{"vmpod_vms", map[string]string{"state": "running"}, 1},
		{"vmpod_vms", map[string]string{"state": "exited"}, 0},
		{"vmpod_vms", map[string]string{"state": "created"}, 0},
		{"vmpod_pod_sandboxes", map[string]string{"state": "ready"}, 1},
		{"vmpod_pod_sandboxes", map[string]string{"state": "notready"}, 1},
		{"vmpod_container_events_total", map[string]string{"type": "created"}, 3}, // 2 sandboxes, 1 container
		{"vmpod_container_events_total", map[string]string{"type": "started"}, 3},
		{"vmpod_container_event_subscribers", nil, 0},
	} {
		if got := value(t, fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	if sum := fams["vmpod_cri_request_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); sum < 0 || sum > 10 {
		t.Errorf("request duration sum %v s is not sane", sum)
	}

	// The gauges follow the state at each scrape: the guest powers off.
	e.LV.GuestPowerOff(domainName(id))
	e.Pods.CheckRunning(ctx)
	fams = scrape(t, m)
	if r, x := value(t, fams, "vmpod_vms", map[string]string{"state": "running"}), value(t, fams, "vmpod_vms", map[string]string{"state": "exited"}); r != 0 || x != 1 {
		t.Errorf("after poweroff: running %v exited %v", r, x)
	}
	if v := value(t, fams, "vmpod_container_events_total", map[string]string{"type": "stopped"}); v != 2 {
		t.Errorf("stopped events = %v, want 2 (the idle sandbox and the VM)", v)
	}
}

// The long-lived event stream stays out of the request histogram.
func TestRequestMetricsSkipEventStream(t *testing.T) {
	m := metrics.New()
	gate := NewGate()
	gate.Open()
	ic := &Interceptors{Log: quietLog(), Gate: gate, Metrics: m}
	handler := func(srv any, ss grpc.ServerStream) error { return nil }
	for _, method := range []string{"GetContainerEvents", "StreamImages"} {
		ss := &fakeEventStream{ctx: context.Background()}
		if err := ic.Stream(nil, ss, &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + method}, handler); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrape(t, m)
	value(t, fams, "vmpod_cri_request_duration_seconds", map[string]string{"method": "StreamImages", "code": "OK"})
	for _, s := range fams["vmpod_cri_request_duration_seconds"].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetValue() == "GetContainerEvents" {
				t.Fatal("GetContainerEvents is in the request histogram")
			}
		}
	}
	// A call refused by the readiness gate is counted too.
	ic.Gate = NewGate()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	ic.Unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.ImageService/ListImages"},
		func(ctx context.Context, req any) (any, error) { return nil, nil })
	value(t, scrape(t, m), "vmpod_cri_request_duration_seconds", map[string]string{"method": "ListImages", "code": "Unavailable"})
}
