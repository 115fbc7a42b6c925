package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

func (b *bench) podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "vmpodbench", Uid: "uid-" + b.tag + "-" + name},
		LogDirectory: filepath.Join(b.podLogDir, name),
		Labels:       map[string]string{"app": "vmpodbench"},
	}
}

func ctrConfig() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "vm"},
		Image:    &runtimeapi.ImageSpec{Image: imageName},
		LogPath:  "vm/0.log",
		Stdin:    true,
		Tty:      true,
	}
}

// crilogPath is where vmpod writes the CRI log of pod name's VM.
func (b *bench) crilogPath(name string) string {
	return filepath.Join(b.podLogDir, name, "vm", "0.log")
}

// podBoot is one pod booted through vmpod; durations are per call.
type podBoot struct {
	name         string
	podID, ctrID string
	t0           time.Time // before RunPodSandbox
	runp         time.Duration
	create       time.Duration
	start        time.Duration
	ready        time.Time // ready line seen in the CRI log
	err          error
}

// total is RunPodSandbox to the ready line.
func (p *podBoot) total() time.Duration { return p.ready.Sub(p.t0) }

// bootPod runs a pod, creates and starts its VM and waits for the ready line
// in the CRI log. w must watch the pod's log (set up before t0).
func (b *bench) bootPod(name string, w *logWatcher, t0 time.Time, deadline time.Time) *podBoot {
	p := &podBoot{name: name, t0: t0}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cfg := b.podConfig(name)
	rp, err := b.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	p.runp = time.Since(t0)
	if err != nil {
		p.err = fmt.Errorf("RunPodSandbox: %w", err)
		return p
	}
	p.podID = rp.GetPodSandboxId()
	t1 := time.Now()
	cr, err := b.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.podID, Config: ctrConfig(), SandboxConfig: cfg})
	p.create = time.Since(t1)
	if err != nil {
		p.err = fmt.Errorf("CreateContainer: %w", err)
		return p
	}
	p.ctrID = cr.GetContainerId()
	b.mu.Lock()
	b.vmpodDomains["vmpod-"+p.ctrID] = true
	b.mu.Unlock()
	t2 := time.Now()
	_, err = b.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.ctrID})
	p.start = time.Since(t2)
	if err != nil {
		p.err = fmt.Errorf("StartContainer: %w", err)
		return p
	}
	p.ready, p.err = w.wait(deadline, 10*time.Second, func() error { return b.checkRunning(p.ctrID) })
	if p.err != nil {
		p.err = fmt.Errorf("%w; the log ends: %q", p.err, tail(w.path, 300))
	}
	return p
}

// tail is the last n bytes of a file, for a failure's message.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, int64(len(b))-n):])
}

// checkRunning returns an error when the container is no longer running
// (e.g. its domain was destroyed by another vmpod's start-up recovery).
func (b *bench) checkRunning(ctrID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrID})
	if err != nil {
		return nil // not conclusive; keep waiting
	}
	if s := st.GetStatus(); s.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("container %s is %s before the ready line (exit %d, %s: %s)", ctrID[:12], s.GetState(), s.GetExitCode(), s.GetReason(), s.GetMessage())
	}
	return nil
}

// ctrInfo is ContainerStatus's verbose info.
type ctrInfo struct {
	Domain       string
	Disks        map[string]string
	SerialSocket string
	DomainXML    string
}

func (b *bench) containerInfo(ctrID string) (ctrInfo, error) {
	var ci ctrInfo
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := b.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrID, Verbose: true})
	if err != nil {
		return ci, err
	}
	err = json.Unmarshal([]byte(st.GetInfo()["info"]), &ci)
	return ci, err
}

// removePod stops and removes a sandbox (and with it its VM), timing both.
func (b *bench) removePod(podID string) (stop, remove time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t := time.Now()
	if _, err := b.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		return time.Since(t), 0, fmt.Errorf("StopPodSandbox %s: %w", podID[:12], err)
	}
	stop = time.Since(t)
	t = time.Now()
	if _, err := b.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		return stop, time.Since(t), fmt.Errorf("RemovePodSandbox %s: %w", podID[:12], err)
	}
	return stop, time.Since(t), nil
}

// qemuRSS returns the VmRSS (KiB) of the QEMU process of a running domain.
func qemuRSS(domain string) (int, error) {
	b, err := os.ReadFile(filepath.Join("/run/libvirt/qemu", domain+".pid"))
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		return 0, err
	}
	ps, err := measure.ReadProc(pid)
	if err != nil {
		return 0, err
	}
	if ps.RSS == 0 {
		return 0, errors.New("no VmRSS")
	}
	return ps.RSS, nil
}
