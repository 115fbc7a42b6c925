package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
)

// Exit codes and reasons of a VM that stopped. A guest that powers itself
// off (or honours StopContainer's ACPI shutdown) exits 0; being killed is
// 137 as for a container killed by SIGKILL.
const (
	exitCompleted = 0
	exitError     = 1
	exitKilled    = 137
	exitCrashed   = 139

	reasonCompleted = "Completed"
	reasonKilled    = "Killed"
	reasonCrashed   = "Crashed"
	reasonError     = "Error"
)

// exitStatus maps how a domain stopped to the container's exit code,
// reason and message.
func exitStatus(st libvirttools.DomainStatus, stopRequested bool) (int32, string, string) {
	if st.State == libvirttools.DomainCrashed {
		return exitCrashed, reasonCrashed, "the guest crashed"
	}
	switch st.Reason {
	case libvirttools.ShutoffShutdown:
		return exitCompleted, reasonCompleted, "the guest powered off"
	case libvirttools.ShutoffDestroyed:
		if stopRequested {
			return exitKilled, reasonKilled, "the guest did not power off within the stop timeout and was destroyed"
		}
		return exitKilled, reasonKilled, "the domain was destroyed outside vmpod"
	case libvirttools.ShutoffCrashed:
		return exitCrashed, reasonCrashed, "QEMU or the guest crashed"
	case libvirttools.ShutoffFailed:
		return exitError, reasonError, "QEMU failed"
	default:
		return exitError, reasonError, "the domain stopped (libvirt reason: " + st.Reason.String() + ")"
	}
}

// markExitedOpLocked records that a running container's VM stopped. c.op
// is held.
func (s *Service) markExitedOpLocked(ctx context.Context, c *container, st libvirttools.DomainStatus) error {
	rec, _ := c.snapshot()
	if rec.State != containerRunning {
		return nil
	}
	rec.State = containerExited
	rec.FinishedAt = s.now().UnixNano()
	rec.ExitCode, rec.Reason, rec.Message = exitStatus(st, rec.StopRequested)
	if err := s.state.saveContainer(rec); err != nil {
		return err
	}
	c.mu.Lock()
	c.rec = rec
	con := c.console
	c.console = nil
	c.mu.Unlock()
	if con != nil {
		con.Close()
	}
	s.containerEvent(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	logging.From(ctx).Info("VM exited", logging.KeyContainerID, rec.ID, "exit_code", rec.ExitCode, "reason", rec.Reason)
	return nil
}

// refresh updates a RUNNING container from its domain's state now, unless
// a lifecycle operation holds it (that operation records the outcome).
func (s *Service) refresh(ctx context.Context, c *container) {
	if !c.op.TryLock() {
		return
	}
	defer c.op.Unlock()
	s.refreshOpLocked(ctx, c)
}

// refreshOpLocked is refresh with c.op held.
func (s *Service) refreshOpLocked(ctx context.Context, c *container) {
	rec, _ := c.snapshot()
	if rec.State != containerRunning {
		return
	}
	st, err := s.libvirt.Status(ctx, rec.Domain)
	if err != nil {
		// NotFound: the domain was undefined behind our back.
		st = libvirttools.DomainStatus{State: libvirttools.DomainShutoff, Reason: libvirttools.ShutoffDestroyed}
		if !isNotFound(err) {
			return // libvirt unreachable: report the last known state
		}
	}
	if st.State == libvirttools.DomainShutoff || st.State == libvirttools.DomainCrashed {
		if err := s.markExitedOpLocked(ctx, c, st); err != nil {
			logging.From(ctx).Error("record VM exit", logging.KeyContainerID, rec.ID, logging.KeyErr, err)
		}
	}
}

// monitorInterval is how often running VMs are checked for a guest that
// powered itself off, so ListContainers reports EXITED without a libvirt
// call per container.
const monitorInterval = time.Second

// Monitor checks running VMs every monitorInterval with one bulk libvirt
// call until ctx is done.
func (s *Service) Monitor(ctx context.Context) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkRunning(ctx)
	}
}

func (s *Service) checkRunning(ctx context.Context) {
	var running []*container
	for _, c := range s.state.listContainers() {
		if rec, _ := c.snapshot(); rec.State == containerRunning {
			running = append(running, c)
		}
	}
	if len(running) == 0 {
		return
	}
	doms, err := s.libvirt.List(ctx, domainPrefix)
	if err != nil {
		return
	}
	byName := map[string]libvirttools.DomainStatus{}
	for _, d := range doms {
		byName[d.Name] = d
	}
	for _, c := range running {
		rec, _ := c.snapshot()
		d, ok := byName[rec.Domain]
		if ok && d.State != libvirttools.DomainShutoff && d.State != libvirttools.DomainCrashed {
			continue
		}
		s.refresh(ctx, c)
	}
}
