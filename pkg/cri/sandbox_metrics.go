package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// The kubelet's PodAndContainerStatsFromCRI serves these on
// /metrics/cadvisor in place of cAdvisor's own: the names, types and
// labels are cAdvisor's, so dashboards and alerts written for cAdvisor
// see VM pods too. The figures are the stats RPCs' (the VM's and the
// pod's cgroups; libvirt's for a VM outside its pod's cgroup, which has
// CPU and memory only). The CRI carries whole numbers: the seconds
// metrics are whole seconds, as CRI-O's are.

// Label keys: cAdvisor's for container metrics. container is the
// container's name ("" for the pod's own cgroup), id the cgroup (or the
// container ID of a VM outside its pod's cgroup), name the container ID.
var (
	metricLabels  = []string{"container", "id", "image", "name", "namespace", "pod"}
	networkLabels = append(append([]string{}, metricLabels...), "interface")
)

// metricDef is one metric: its descriptor, type and where its value
// comes from (ok false: not known for this container).
type metricDef struct {
	name, help string
	counter    bool
	value      func(u lifecycle.CgroupUsage, l *lifecycle.CgroupLimits) (float64, bool)
}

func always(f func(u lifecycle.CgroupUsage) float64) func(lifecycle.CgroupUsage, *lifecycle.CgroupLimits) (float64, bool) {
	return func(u lifecycle.CgroupUsage, _ *lifecycle.CgroupLimits) (float64, bool) { return f(u), true }
}

func limit(f func(l lifecycle.CgroupLimits) float64) func(lifecycle.CgroupUsage, *lifecycle.CgroupLimits) (float64, bool) {
	return func(_ lifecycle.CgroupUsage, l *lifecycle.CgroupLimits) (float64, bool) {
		if l == nil {
			return 0, false
		}
		return f(*l), true
	}
}

var cgroupMetrics = []metricDef{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CPUNs) / 1e9 })},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CPUUserNs) / 1e9 })},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CPUSystemNs) / 1e9 })},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CFSPeriods) })},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CFSThrottledPeriods) })},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CFSThrottledNs) / 1e9 })},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", false, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.MemoryBytes) })},
	{"container_memory_working_set_bytes", "Current working set in bytes.", false, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.WorkingSetBytes) })},
	{"container_memory_rss", "Size of RSS in bytes.", false, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.RSSBytes) })},
	{"container_memory_cache", "Number of bytes of page cache memory.", false, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.CacheBytes) })},
	{"container_oom_events_total", "Count of out of memory events observed for the container.", true, always(func(u lifecycle.CgroupUsage) float64 { return float64(u.OOMKills) })},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", false, limit(func(l lifecycle.CgroupLimits) float64 { return float64(l.MemoryBytes) })},
	{"container_spec_cpu_shares", "CPU share of the container.", false, limit(func(l lifecycle.CgroupLimits) float64 { return float64(l.CPUShares) })},
	{"container_spec_cpu_quota", "CPU quota of the container.", false, limit(func(l lifecycle.CgroupLimits) float64 { return float64(max(l.CPUQuotaUS, 0)) })},
	{"container_spec_cpu_period", "CPU period of the container.", false, limit(func(l lifecycle.CgroupLimits) float64 { return float64(l.CPUPeriodUS) })},
}

// networkMetrics are the pod's interfaces' counters.
var networkMetrics = []struct {
	name, help string
	value      func(u lifecycle.InterfaceUsage) float64
}{
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", func(u lifecycle.InterfaceUsage) float64 { return float64(u.RxBytes) }},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", func(u lifecycle.InterfaceUsage) float64 { return float64(u.TxBytes) }},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", func(u lifecycle.InterfaceUsage) float64 { return float64(u.RxErrors) }},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", func(u lifecycle.InterfaceUsage) float64 { return float64(u.TxErrors) }},
}

// ListMetricDescriptors describes the metrics ListPodSandboxMetrics
// returns.
func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	var out []*runtimeapi.MetricDescriptor
	for _, m := range cgroupMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: metricLabels})
	}
	for _, m := range networkMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: networkLabels})
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// ListPodSandboxMetrics returns every pod's metrics and those of its
// running VM.
func (s *Service) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	all, err := s.pods.AllSandboxStats(ctx)
	if err != nil {
		return nil, err
	}
	out := []*runtimeapi.PodSandboxMetrics{}
	for _, st := range all {
		out = append(out, sandboxMetrics(st))
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: out}, nil
}

func sandboxMetrics(st lifecycle.SandboxStats) *runtimeapi.PodSandboxMetrics {
	md := st.Config.GetMetadata()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: st.ID}
	var podCgroup string
	for _, cs := range st.Containers {
		if !cs.Running {
			continue
		}
		id, u, l := cs.ID, lifecycle.CgroupUsage{CPUNs: cs.CPUTimeNs, MemoryBytes: cs.UsageBytes, WorkingSetBytes: cs.WorkingSetBytes, RSSBytes: cs.RSSBytes}, (*lifecycle.CgroupLimits)(nil)
		if cs.CgroupUsage != nil && cs.Cgroup != nil {
			id, u, l = cs.Cgroup.Path, *cs.CgroupUsage, &cs.Cgroup.Limits
			podCgroup = cs.Cgroup.Parent
		}
		labels := []string{cs.Config.GetMetadata().GetName(), id, cs.ImageName, cs.ID, md.GetNamespace(), md.GetName()}
		cm := &runtimeapi.ContainerMetrics{ContainerId: cs.ID}
		for _, m := range cgroupMetrics {
			if cs.CgroupUsage == nil && !basicMetric(m.name) {
				continue // libvirt's figures have CPU and memory only
			}
			if v, ok := m.value(u, l); ok {
				cm.Metrics = append(cm.Metrics, metric(m.name, m.counter, v, labels))
			}
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
	}
	podLabels := []string{"", podCgroup, "", "", md.GetNamespace(), md.GetName()}
	if st.CgroupUsage != nil {
		for _, m := range cgroupMetrics {
			if v, ok := m.value(*st.CgroupUsage, nil); ok {
				pm.Metrics = append(pm.Metrics, metric(m.name, m.counter, v, podLabels))
			}
		}
	}
	for _, iu := range st.Network {
		for _, m := range networkMetrics {
			pm.Metrics = append(pm.Metrics, metric(m.name, true, m.value(iu), append(append([]string{}, podLabels...), iu.Name)))
		}
	}
	return pm
}

// basicMetric says whether a VM outside its pod's cgroup has the metric
// (libvirt's figures: CPU time and memory).
func basicMetric(name string) bool {
	switch name {
	case "container_cpu_usage_seconds_total", "container_memory_usage_bytes", "container_memory_working_set_bytes", "container_memory_rss":
		return true
	}
	return false
}

func metric(name string, counter bool, v float64, labels []string) *runtimeapi.Metric {
	t := runtimeapi.MetricType_GAUGE
	if counter {
		t = runtimeapi.MetricType_COUNTER
	}
	// Timestamp 0: read when asked, not cached.
	return &runtimeapi.Metric{Name: name, MetricType: t, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: uint64(v)}}
}
