package cri

import (
	"context"
	"errors"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/metrics"
)

// metricsSnapshot counts containers and sandboxes by state for the state
// gauges, at scrape time. It reads only the in-memory records (no libvirt
// call, no operation lock), so a scrape never waits behind a slow stop.
// Every state is reported, zero included, so a series does not vanish.
func (s *Service) metricsSnapshot() metrics.Snapshot {
	snap := metrics.Snapshot{
		VMs: map[string]int{},
		Sandboxes: map[string]int{
			strings.ToLower(sandboxReady): 0, strings.ToLower(sandboxNotReady): 0,
		},
		EventSubscribers: s.events.count(),
	}
	for _, st := range []string{containerCreating, containerCreated, containerRunning, containerExited} {
		snap.VMs[strings.ToLower(st)] = 0
	}
	for _, c := range s.state.listContainers() {
		rec, _ := c.snapshot()
		snap.VMs[strings.ToLower(rec.State)]++
	}
	for _, sb := range s.state.listSandboxes() {
		snap.Sandboxes[strings.ToLower(sb.state())]++
	}
	return snap
}

// observeExecSync records an ExecSync call when it returns (deferred with
// pointers to its results).
func (s *Service) observeExecSync(start time.Time, resp **runtimeapi.ExecSyncResponse, err *error) {
	result := metrics.ExecError
	switch {
	case *err == nil && (*resp).GetExitCode() == 0:
		result = metrics.ExecExitZero
	case *err == nil:
		result = metrics.ExecExitNonZero
	case errors.Is(*err, context.DeadlineExceeded):
		result = metrics.ExecTimeout
	}
	s.metrics.ObserveExecSync(result, time.Since(start))
}
