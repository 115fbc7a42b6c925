package cri

import (
	"context"
	"errors"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/metrics"
)

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
