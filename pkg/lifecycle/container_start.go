package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/rollback"
)

// consoleConnectTimeout bounds how long a start waits for vmpod's console
// reader to connect before it resumes the guest anyway.
const consoleConnectTimeout = 10 * time.Second

// StartContainer boots the VM. Its taps are made in the host netns, the
// domain starts paused, its QEMU moves into the pod's cgroup when the pod
// has a cgroup_parent (cgroup.go), the taps move into the pod's netns and
// bridges (the DHCP servers start), vmpod's console reader connects to
// the serial socket, then the guest runs, so the log has the whole boot,
// the guest's first DHCP request finds its server and everything the
// guest does is accounted to its pod. A container with a command also has
// its output ports connected before the guest runs, and its command
// starts once the guest agent answers (container_command.go). A failure
// at any step undoes the earlier ones: the container stays CREATED.
func (c *Controller) StartContainer(ctx context.Context, id string) (retErr error) {
	ct, err := c.reg.container(id)
	if err != nil {
		return err
	}
	ct.op.Lock()
	defer ct.op.Unlock()
	rec := ct.Get()
	if rec.State != ContainerCreated {
		return fmt.Errorf("container %s is %s; only a created container can be started (create a new one to boot again): %w",
			rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	sb, err := c.reg.sandbox(rec.SandboxID)
	if err != nil {
		return err
	}
	sbRec := sb.Get()
	if sbRec.State != SandboxReady {
		return fmt.Errorf("pod sandbox %s is %s; containers start only in a ready sandbox: %w", rec.SandboxID, sbRec.State, errdefs.ErrFailedPrecondition)
	}
	begin := time.Now()
	boot := func(ctx context.Context) error { return c.libvirt.Start(ctx, rec.Domain, true) }
	if rec.Restore != nil {
		boot = func(ctx context.Context) error {
			return c.libvirt.Restore(ctx, rec.Restore.MemoryFile, true, c.cfg.CreateTimeout.Std())
		}
	}
	if err := c.bootVM(ctx, ct, sb, boot, true); err != nil {
		return err
	}
	if _, err := ct.Update(func(r *ContainerRecord) error {
		r.State, r.StartedAt = ContainerRunning, c.now().UnixNano()
		return nil
	}); err != nil {
		if con := ct.swapConsole(nil); con != nil {
			con.Close()
		}
		c.libvirt.Destroy(ctx, rec.Domain)
		return fmt.Errorf("store container record: %w", err)
	}
	failpoint.Hit("start/running")
	c.startCommandRunner(ct)
	c.metrics.ObserveVMStart(time.Since(begin))
	if rec.Restore != nil {
		c.finishRestore(ct)
	}
	if rec.WarmStart != nil {
		go c.buildTemplate(ct)
	}
	logging.From(ctx).Info("VM started", logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain, "restored", rec.Restore != nil)
	return nil
}

// bootVM runs a container's domain with boot (which must leave it
// paused): its taps are made in the host netns, the domain boots paused,
// its QEMU moves into the pod's cgroup when the pod has a cgroup_parent,
// the taps move into the pod's netns and bridges (the DHCP servers
// start), then the guest runs. A fresh boot (a start) first plans the
// cgroup and connects a new console reader before the guest runs, so the
// log has the whole boot; a VM restored in place after a checkpoint keeps
// its console reader, which reconnects by itself. A failure undoes every
// step: the domain is destroyed.
func (c *Controller) bootVM(ctx context.Context, ct *container, sb *sandbox, boot func(context.Context) error, fresh bool) (retErr error) {
	rec, sbRec := ct.Get(), sb.Get()
	log := logging.From(ctx).With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain)
	var undo rollback.Steps
	defer func() { undo.Run(ctx, log, retErr) }()

	att := sbRec.LiveNetwork()
	if att != nil {
		rel, err := c.prepareTaps(att)
		if err != nil {
			return err
		}
		undo.Add("the VM's taps and DHCP servers", rel)
		failpoint.Hit("start/taps-created")
	}
	placed := rec.VM.CgroupParent != ""
	if placed && fresh {
		rel, err := c.planCgroup(ct, sbRec, sb.config)
		if err != nil {
			return err
		}
		undo.Add("the VM's cgroup", rel)
		failpoint.Hit("start/cgroup-planned")
	}
	if err := boot(ctx); err != nil {
		return fmt.Errorf("start domain %s: %w", rec.Domain, err)
	}
	undo.Add("domain "+rec.Domain, func(ctx context.Context) error { return c.libvirt.Destroy(ctx, rec.Domain) })
	failpoint.Hit("start/domain-started")
	if placed && ct.Get().Cgroup != nil {
		if err := c.placeVM(ctx, ct); err != nil {
			return err
		}
		failpoint.Hit("start/vm-placed")
	}
	if att != nil {
		if err := c.net.PlugVM(att, guestNetworkInfo(sb.config)); err != nil {
			return fmt.Errorf("plug the VM into the pod network: %w", err)
		}
		failpoint.Hit("start/vm-plugged")
	}
	var con ConsoleHandle
	if fresh {
		var err error
		con, err = c.startConsole(rec)
		if err != nil {
			return err
		}
		undo.Add("the console reader", func(context.Context) error { return con.Close() })
		select {
		case <-connected(con):
		case <-time.After(consoleConnectTimeout):
			log.Warn("serial console did not connect in time; early boot output may be missing from the log")
		}
		failpoint.Hit("start/console-connected")
	}
	if err := c.libvirt.Resume(ctx, rec.Domain); err != nil {
		return fmt.Errorf("resume domain %s: %w", rec.Domain, err)
	}
	failpoint.Hit("start/resumed")
	if fresh {
		ct.swapConsole(con)
		go c.watchGuestReports(ct, con)
	}
	return nil
}

// prepareTaps makes a boot's taps in the host netns; the release removes
// them and the DHCP servers PlugVM started.
func (c *Controller) prepareTaps(att *cni.Attachment) (rollback.Release, error) {
	unplug := func(context.Context) error { return c.net.UnplugVM(att) }
	if err := c.net.PrepareVM(att); err != nil {
		unplug(context.Background())
		return nil, fmt.Errorf("create the VM's taps: %w", err)
	}
	return unplug, nil
}

// startConsole starts the console reader of a container's VM, with the
// output streams of its command.
func (c *Controller) startConsole(rec ContainerRecord) (ConsoleHandle, error) {
	logPath := rec.LogPath
	if logPath == "" {
		// No CRI log requested: keep the console in the container's dir so
		// attach still has a reader.
		logPath = rec.Layout().ConsoleLog()
	}
	spec := ConsoleSpec{Socket: rec.Layout().SerialSocket(), LogPath: logPath}
	if rec.Command != nil {
		spec.Stdout, spec.Stderr, spec.Nonce = rec.Layout().StdoutSocket(), rec.Layout().StderrSocket(), rec.Command.Nonce
	}
	con, err := c.newConsole(spec, c.log.With(logging.KeyContainerID, rec.ID))
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
