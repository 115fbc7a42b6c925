package cri

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// consoleConnectTimeout bounds how long a start waits for vmpod's console
// reader to connect before it resumes the guest anyway.
const consoleConnectTimeout = 10 * time.Second

// StartContainer boots the VM. Its taps are made in the host netns, the
// domain starts paused, the taps move into the pod's netns and bridges (the
// DHCP servers start), vmpod's console reader connects to the serial
// socket, then the guest runs, so the log has the whole boot and the
// guest's first DHCP request finds its server.
func (s *Service) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, err := s.state.getContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	rec, _ := c.snapshot()
	if rec.State != containerCreated {
		return nil, fmt.Errorf("container %s is %s; only a created container can be started (create a new one to boot again): %w",
			rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.state.getSandbox(rec.SandboxID)
	if err != nil {
		return nil, err
	}
	if sbState := sb.state(); sbState != sandboxReady {
		return nil, fmt.Errorf("pod sandbox %s is %s; containers start only in a ready sandbox: %w", rec.SandboxID, sbState, errdefs.ErrFailedPrecondition)
	}
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	sb.mu.Lock()
	att, sbCfg := sandboxNetwork(sb.rec), sb.config
	sb.mu.Unlock()
	// unplug removes this boot's taps and DHCP servers; undo also stops
	// the paused or running domain.
	unplug := func() {
		if att != nil {
			s.net.UnplugVM(att)
		}
	}
	undo := func() {
		s.libvirt.Destroy(context.WithoutCancel(ctx), rec.Domain)
		unplug()
	}
	if att != nil {
		if err := s.net.PrepareVM(att); err != nil {
			unplug()
			return nil, fmt.Errorf("create the VM's taps: %w", err)
		}
	}
	begin := time.Now()
	if err := s.libvirt.Start(ctx, rec.Domain, true); err != nil {
		unplug()
		return nil, fmt.Errorf("start domain %s: %w", rec.Domain, err)
	}
	if att != nil {
		if err := s.net.PlugVM(att, guestNetworkInfo(sbCfg)); err != nil {
			undo()
			return nil, fmt.Errorf("plug the VM into the pod network: %w", err)
		}
	}
	con, err := s.startConsole(rec, log)
	if err != nil {
		undo()
		return nil, err
	}
	select {
	case <-connected(con):
	case <-time.After(consoleConnectTimeout):
		log.Warn("serial console did not connect in time; early boot output may be missing from the log")
	}
	if err := s.libvirt.Resume(ctx, rec.Domain); err != nil {
		con.Close()
		undo()
		return nil, fmt.Errorf("resume domain %s: %w", rec.Domain, err)
	}
	rec.State = containerRunning
	rec.StartedAt = s.now().UnixNano()
	if err := s.state.saveContainer(rec); err != nil {
		con.Close()
		undo()
		return nil, fmt.Errorf("store container record: %w", err)
	}
	c.mu.Lock()
	c.rec = rec
	c.console = con
	c.mu.Unlock()
	s.containerStarted(ctx, rec, time.Since(begin))
	log.Info("VM started")
	return &runtimeapi.StartContainerResponse{}, nil
}

// startConsole starts the console reader of a container's VM.
func (s *Service) startConsole(rec containerRecord, log interface{ Info(string, ...any) }) (ConsoleHandle, error) {
	logPath := rec.LogPath
	if logPath == "" {
		// No CRI log requested: keep the console in the container's dir so
		// attach still has a reader.
		logPath = filepath.Join(rec.Dir, "console.log")
	}
	con, err := s.newConsole(serialSocket(rec.RunDir), logPath, s.log.With(logging.KeyContainerID, rec.ID))
	if err != nil {
		return nil, fmt.Errorf("start serial console reader: %w", err)
	}
	return con, nil
}

// connected returns the console's first-connection channel when it has one.
func connected(con ConsoleHandle) <-chan struct{} {
	if cc, ok := con.(interface{ Connected() <-chan struct{} }); ok {
		return cc.Connected()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}
