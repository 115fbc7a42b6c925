package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func parse(t *testing.T, body io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

func get(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return parse(t, resp.Body)
}

// series returns the family's series as "label=value,...": value.
func series(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Histogram != nil:
			v = float64(m.GetHistogram().GetSampleCount())
		}
		out[strings.Join(ls, ",")] = v
	}
	return out
}

func TestScrape(t *testing.T) {
	m := New()
	m.ObserveRPC("RunPodSandbox", "OK", 20*time.Millisecond)
	m.ObserveRPC("RunPodSandbox", "OK", 30*time.Millisecond)
	m.ObserveRPC("CreateContainer", "FailedPrecondition", time.Millisecond)
	m.ObserveImagePull("OK", 3*time.Second)
	m.ObserveImagePull("NotFound", 100*time.Millisecond)
	m.AddImagePullBytes(1 << 20)
	m.AddImagePullBytes(0)
	m.ObserveVMStart(1500 * time.Millisecond)
	m.ObserveExecSync(ExecExitZero, 10*time.Millisecond)
	m.ObserveExecSync(ExecTimeout, time.Second)
	m.IncEvent("stopped")
	m.IncEventSubscriberDropped()
	m.SetSnapshot(func() Snapshot {
		return Snapshot{
			VMs:              map[string]int{"running": 2, "exited": 1, "created": 0},
			Sandboxes:        map[string]int{"ready": 2, "notready": 0},
			EventSubscribers: 1,
		}
	})

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := get(t, srv.URL)
	for _, tc := range []struct {
		family string
		want   map[string]float64
	}{
		{"vmpod_cri_request_duration_seconds", map[string]float64{
			"code=OK,method=RunPodSandbox": 2, "code=FailedPrecondition,method=CreateContainer": 1}},
		{"vmpod_image_pulls_total", map[string]float64{"result=OK": 1, "result=NotFound": 1}},
		{"vmpod_image_pull_duration_seconds", map[string]float64{"result=OK": 1, "result=NotFound": 1}},
		{"vmpod_image_pull_downloaded_bytes_total", map[string]float64{"": 1 << 20}},
		{"vmpod_vm_start_duration_seconds", map[string]float64{"": 1}},
		{"vmpod_exec_sync_total", map[string]float64{"result=exit_zero": 1, "result=timeout": 1}},
		{"vmpod_exec_sync_duration_seconds", map[string]float64{"": 2}},
		{"vmpod_container_events_total", map[string]float64{"type=stopped": 1}},
		{"vmpod_container_event_subscribers_dropped_total", map[string]float64{"": 1}},
		{"vmpod_vms", map[string]float64{"state=running": 2, "state=exited": 1, "state=created": 0}},
		{"vmpod_pod_sandboxes", map[string]float64{"state=ready": 2, "state=notready": 0}},
		{"vmpod_container_event_subscribers", map[string]float64{"": 1}},
	} {
		f, ok := fams[tc.family]
		if !ok {
			t.Errorf("no family %s", tc.family)
			continue
		}
		got := series(f)
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%s{%s} = %v, want %v (all: %v)", tc.family, k, got[k], v, got)
			}
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help text", tc.family)
		}
	}
	// The histogram's sum is the observed seconds.
	for _, s := range fams["vmpod_vm_start_duration_seconds"].GetMetric() {
		if sum := s.GetHistogram().GetSampleSum(); sum != 1.5 {
			t.Errorf("vm start duration sum = %v, want 1.5", sum)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "promhttp_metric_handler_requests_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	// A private registry: nothing lands in the global default one.
	def, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range def {
		if strings.HasPrefix(f.GetName(), "vmpod_") {
			t.Errorf("%s registered in the global default registry", f.GetName())
		}
	}
}

// Before the runtime installs its snapshot the state gauges are absent,
// not zero.
func TestNoSnapshot(t *testing.T) {
	srv := httptest.NewServer(New().Handler())
	defer srv.Close()
	if _, ok := get(t, srv.URL)["vmpod_vms"]; ok {
		t.Error("vmpod_vms reported without a state snapshot")
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.ObserveRPC("Version", "OK", time.Millisecond)
	m.ObserveImagePull("OK", time.Second)
	m.AddImagePullBytes(1)
	m.ObserveVMStart(time.Second)
	m.ObserveExecSync(ExecError, time.Second)
	m.IncEvent("created")
	m.IncEventSubscriberDropped()
	m.SetSnapshot(func() Snapshot { return Snapshot{} })
}

func TestServe(t *testing.T) {
	m := New()
	m.IncEvent("created")
	s, err := m.Serve("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(s.Addr(), ":0") {
		t.Fatalf("Addr() = %s, want the bound port", s.Addr())
	}
	fams := get(t, "http://"+s.Addr()+"/metrics")
	if series(fams["vmpod_container_events_total"])["type=created"] != 1 {
		t.Fatal("served metrics lack the recorded event")
	}
	resp, err := http.Get("http://" + s.Addr() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s, want 404", resp.Status)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/metrics"); err == nil {
		t.Fatal("still serving after Shutdown")
	}
	if _, err := m.Serve("256.0.0.1:1", slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("listening on a bad address succeeded")
	}
}
