// Package metrics owns vmpod's Prometheus metrics: a private registry (with
// the Go runtime and process collectors), the metric families the runtime
// records into, the gauges read from the runtime's state at scrape time,
// and the HTTP server that serves them on metrics_address.
//
// Every recording method is safe on a nil *Metrics (it does nothing), so
// code and tests that run without metrics need no checks.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "vmpod"

// Buckets, in seconds. CRI calls range from sub-millisecond List calls to
// VM creates and image pulls of minutes; boots under TCG take tens of
// seconds.
var (
	rpcBuckets  = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	pullBuckets = []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}
	bootBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	execBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

// Exec results (the result label of vmpod_exec_sync_total).
const (
	ExecExitZero    = "exit_zero"    // the command ran and exited 0
	ExecExitNonZero = "exit_nonzero" // the command ran and exited non-zero
	ExecTimeout     = "timeout"      // the timeout passed; the guest process was killed
	ExecError       = "error"        // no exit code: no guest agent, VM not running, ...
)

// Snapshot is the runtime's state as the state gauges report it, read at
// scrape time.
type Snapshot struct {
	// VMs counts containers (one VM each) by state: creating, created,
	// running, exited.
	VMs map[string]int
	// Sandboxes counts pod sandboxes by state: ready, notready.
	Sandboxes map[string]int
	// EventSubscribers is the number of open GetContainerEvents streams.
	EventSubscribers int
}

// Metrics holds the registry and vmpod's metric families.
type Metrics struct {
	reg *prometheus.Registry

	rpcDuration       *prometheus.HistogramVec
	imagePulls        *prometheus.CounterVec
	imagePullDuration *prometheus.HistogramVec
	imagePullBytes    prometheus.Counter
	vmStartDuration   prometheus.Histogram
	execSync          *prometheus.CounterVec
	execSyncDuration  prometheus.Histogram
	events            *prometheus.CounterVec
	eventSubsDropped  prometheus.Counter

	snapshot atomic.Pointer[func() Snapshot]
}

// New returns the metrics over a new private registry that also holds the
// Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "cri_request_duration_seconds",
		Help:    "Duration of CRI gRPC calls by method and gRPC status code (the long-lived GetContainerEvents stream is not included).",
		Buckets: rpcBuckets,
	}, []string{"method", "code"})
	m.imagePulls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "image_pulls_total",
		Help: "PullImage calls by result: OK or the gRPC code of the failure (NotFound, InvalidArgument, Unavailable, Canceled, ...).",
	}, []string{"result"})
	m.imagePullDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "image_pull_duration_seconds",
		Help:    "Duration of PullImage calls by result (as vmpod_image_pulls_total).",
		Buckets: pullBuckets,
	}, []string{"result"})
	m.imagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "image_pull_downloaded_bytes_total",
		Help: "Bytes image pulls fetched from HTTP(S) servers and registries (a pull the store already had downloads nothing).",
	})
	m.vmStartDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "vm_start_duration_seconds",
		Help:    "Time StartContainer took from starting the libvirt domain (paused) until the guest runs with its console reader connected.",
		Buckets: bootBuckets,
	})
	m.execSync = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "exec_sync_total",
		Help: "ExecSync calls (exec probes, crictl exec -s) by result: exit_zero, exit_nonzero, timeout, error.",
	}, []string{"result"})
	m.execSyncDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "exec_sync_duration_seconds",
		Help:    "Duration of ExecSync calls, whatever their result.",
		Buckets: execBuckets,
	})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "container_events_total",
		Help: "Container events (GetContainerEvents) by type: created, started, stopped, deleted; counted whether or not a client listens.",
	}, []string{"type"})
	m.eventSubsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "container_event_subscribers_dropped_total",
		Help: "GetContainerEvents streams vmpod ended because the client did not keep up (its buffer was full).",
	})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpcDuration, m.imagePulls, m.imagePullDuration, m.imagePullBytes, m.vmStartDuration,
		m.execSync, m.execSyncDuration, m.events, m.eventSubsDropped,
		stateCollector{m},
	)
	return m
}

// Registry returns the private registry (tests, extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
}

// SetSnapshot installs the function the state gauges call at each scrape.
// It must be cheap and must not block on VM operations.
func (m *Metrics) SetSnapshot(f func() Snapshot) {
	if m != nil {
		m.snapshot.Store(&f)
	}
}

// ObserveRPC records one CRI call.
func (m *Metrics) ObserveRPC(method, code string, d time.Duration) {
	if m != nil {
		m.rpcDuration.WithLabelValues(method, code).Observe(d.Seconds())
	}
}

// ObserveImagePull records one PullImage call; result is "OK" or the gRPC
// code name of its error.
func (m *Metrics) ObserveImagePull(result string, d time.Duration) {
	if m != nil {
		m.imagePulls.WithLabelValues(result).Inc()
		m.imagePullDuration.WithLabelValues(result).Observe(d.Seconds())
	}
}

// AddImagePullBytes counts bytes a pull downloaded.
func (m *Metrics) AddImagePullBytes(n int64) {
	if m != nil && n > 0 {
		m.imagePullBytes.Add(float64(n))
	}
}

// ObserveVMStart records how long a successful StartContainer took to get
// the guest running.
func (m *Metrics) ObserveVMStart(d time.Duration) {
	if m != nil {
		m.vmStartDuration.Observe(d.Seconds())
	}
}

// ObserveExecSync records one ExecSync call; result is one of the Exec*
// constants.
func (m *Metrics) ObserveExecSync(result string, d time.Duration) {
	if m != nil {
		m.execSync.WithLabelValues(result).Inc()
		m.execSyncDuration.Observe(d.Seconds())
	}
}

// IncEvent counts one container event of type typ (created, started,
// stopped, deleted).
func (m *Metrics) IncEvent(typ string) {
	if m != nil {
		m.events.WithLabelValues(typ).Inc()
	}
}

// IncEventSubscriberDropped counts an event stream ended for not keeping up.
func (m *Metrics) IncEventSubscriberDropped() {
	if m != nil {
		m.eventSubsDropped.Inc()
	}
}

// stateCollector reports the runtime's state at scrape time: no background
// loop keeps these gauges up to date.
type stateCollector struct{ m *Metrics }

var (
	vmsDesc = prometheus.NewDesc(namespace+"_vms",
		"Containers (one VM each) by state: creating, created, running, exited.", []string{"state"}, nil)
	sandboxesDesc = prometheus.NewDesc(namespace+"_pod_sandboxes",
		"Pod sandboxes by state: ready, notready.", []string{"state"}, nil)
	subscribersDesc = prometheus.NewDesc(namespace+"_container_event_subscribers",
		"Open GetContainerEvents streams.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- vmsDesc
	ch <- sandboxesDesc
	ch <- subscribersDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.snapshot.Load()
	if f == nil {
		return
	}
	s := (*f)()
	for _, state := range slices.Sorted(maps.Keys(s.VMs)) {
		ch <- prometheus.MustNewConstMetric(vmsDesc, prometheus.GaugeValue, float64(s.VMs[state]), state)
	}
	for _, state := range slices.Sorted(maps.Keys(s.Sandboxes)) {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(s.Sandboxes[state]), state)
	}
	ch <- prometheus.MustNewConstMetric(subscribersDesc, prometheus.GaugeValue, float64(s.EventSubscribers))
}

// Server is the HTTP server of the metrics endpoint.
type Server struct {
	hs   *http.Server
	addr string
}

// Addr is the address the server listens on (the resolved port when the
// configured one was 0).
func (s *Server) Addr() string { return s.addr }

// Serve listens on addr (host:port) and serves the metrics at /metrics
// until Shutdown.
func (m *Metrics) Serve(addr string, log *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	s := &Server{
		hs:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: lis.Addr().String(),
	}
	go func() {
		if err := s.hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Shutdown stops the server, letting a scrape in progress finish until ctx
// is done.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.hs.Shutdown(ctx); err != nil {
		return s.hs.Close()
	}
	return nil
}
