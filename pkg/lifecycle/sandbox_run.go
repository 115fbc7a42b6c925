package lifecycle

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/rollback"
)

// RunSandbox validates a pod, parses its annotations once (the options are
// stored with the record), reserves its name, sets up its network (netns,
// CNI ADD, the bridges the VM's taps will join) and records the sandbox.
// The VM itself is the pod's container (CreateContainer). A failure leaves
// nothing behind: the network is torn down and the record removed. The
// work outlasts ctx: a retry with the same pod gets its result.
func (c *Controller) RunSandbox(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	m := cfg.GetMetadata()
	if m.GetName() == "" || m.GetNamespace() == "" || m.GetUid() == "" {
		return "", fmt.Errorf("RunPodSandbox: metadata name, namespace and uid are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return "", fmt.Errorf("pod %s/%s asks for the host network (hostNetwork: true); a VM cannot share the node's network stack: %w",
			m.GetNamespace(), m.GetName(), errdefs.ErrInvalidArgument)
	}
	h, err := c.cfg.ResolveHandler(handler)
	if err != nil {
		return "", err
	}
	if err := c.checkCgroupParent(cfg); err != nil {
		return "", err
	}
	opts, err := podspec.Parse(cfg.GetAnnotations())
	if err != nil {
		return "", err
	}
	if err := opts.Check(podspec.LimitsOf(c.cfg)); err != nil {
		return "", err
	}
	name := sandboxName(m)
	return c.pending.Run(ctx, name, func(ctx context.Context) (string, error) {
		ctx, cancel := c.detached(ctx)
		defer cancel()
		return c.runSandbox(ctx, name, h.Name, cfg, opts)
	})
}

func (c *Controller) runSandbox(ctx context.Context, name, handler string, cfg *runtimeapi.PodSandboxConfig, opts podspec.Options) (_ string, retErr error) {
	id := newID()
	log := logging.From(ctx).With(logging.KeySandboxID, id, logging.KeyPod, name, logging.KeyHandler, handler)
	var undo rollback.Steps
	defer func() { undo.Run(ctx, log, retErr) }()

	if err := c.reg.reserve(name, id); err != nil {
		return "", fmt.Errorf("pod sandbox %s: %w", name, err)
	}
	undo.Add("the name "+name, func(context.Context) error { c.reg.release(name, id); return nil })
	raw, err := encodeSandboxConfig(cfg)
	if err != nil {
		return "", err
	}
	rec := SandboxRecord{ID: id, Name: name, Handler: handler, State: SandboxCreating, CreatedAt: c.now().UnixNano(), Config: raw, Options: &opts}
	if c.net != nil {
		pod := podNetworkInfo(cfg, opts.Network)
		if rec.Network, err = c.net.Plan(id, pod); err != nil {
			return "", fmt.Errorf("pod sandbox %s: %w", name, err)
		}
	}
	sb := c.reg.newSandbox(rec, cfg)
	// Stored before anything exists, so recovery can undo a crash in the
	// middle.
	if err := sb.save(rec); err != nil {
		return "", fmt.Errorf("store sandbox record: %w", err)
	}
	undo.Add("the record of pod sandbox "+id, func(context.Context) error { return c.reg.removeSandbox(sb) })
	failpoint.Hit("runp/record-stored")
	if rec.Network != nil {
		undo.Add("the network of pod sandbox "+id, func(ctx context.Context) error {
			// Best effort, as the kubelet's other runtimes do: a DEL that
			// fails now (often the same broken config that failed ADD)
			// would fail on every retry too; rollback logs it.
			return c.net.Teardown(ctx, rec.Network)
		})
		log.Info("setting up pod network", "netns", rec.Network.NetNS, "cni_config", rec.Network.ConfFile)
		// The ADD result is stored before the addresses move to the guest,
		// so a teardown after a crash can give them back for CNI DEL.
		persist := func() error { return sb.save(rec) }
		if err := c.net.Setup(ctx, rec.Network, persist); err != nil {
			return "", fmt.Errorf("pod sandbox %s: %w", name, err)
		}
		log.Info("pod network ready", "ips", fmt.Sprint(rec.Network.IPs()))
	}
	if _, err := sb.Update(func(r *SandboxRecord) error {
		r.Network, r.State = rec.Network, SandboxReady
		return nil
	}); err != nil {
		return "", fmt.Errorf("store sandbox record: %w", err)
	}
	c.reg.addSandbox(sb)
	failpoint.Hit("runp/ready")
	log.Info("pod sandbox ready")
	return id, nil
}
