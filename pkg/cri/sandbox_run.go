package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// RunPodSandbox reserves the pod's name, sets up the pod's network (netns,
// CNI ADD, the bridges the VM's taps will join) and records the sandbox.
// The VM itself is the pod's container (CreateContainer). A failure leaves
// nothing behind: the network is torn down and the record removed.
func (s *Service) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	m := cfg.GetMetadata()
	if m.GetName() == "" || m.GetNamespace() == "" || m.GetUid() == "" {
		return nil, fmt.Errorf("RunPodSandbox: metadata name, namespace and uid are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return nil, fmt.Errorf("pod %s/%s asks for the host network (hostNetwork: true); a VM cannot share the node's network stack: %w",
			m.GetNamespace(), m.GetName(), errdefs.ErrInvalidArgument)
	}
	h, err := s.cfg.ResolveHandler(req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	if _, err := parseAnnotations(cfg.GetAnnotations()); err != nil {
		return nil, err
	}
	name := sandboxName(m)
	id, err := s.pending.run(ctx, name, func(ctx context.Context) (string, error) {
		return s.runPodSandbox(ctx, name, h.Name, cfg)
	})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (s *Service) runPodSandbox(ctx context.Context, name, handler string, cfg *runtimeapi.PodSandboxConfig) (_ string, retErr error) {
	id := newID()
	log := logging.From(ctx).With(logging.KeySandboxID, id, logging.KeyPod, name, logging.KeyHandler, handler)
	if err := s.state.reserve(name, id); err != nil {
		return "", fmt.Errorf("pod sandbox %s: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			s.state.release(name, id)
		}
	}()
	raw, err := encodeSandboxConfig(cfg)
	if err != nil {
		return "", err
	}
	rec := sandboxRecord{ID: id, Name: name, Handler: handler, State: sandboxReady, CreatedAt: s.now().UnixNano(), Config: raw}
	if s.net != nil {
		pod, err := podNetworkInfo(cfg)
		if err != nil {
			return "", err
		}
		if rec.Network, err = s.net.Plan(id, pod); err != nil {
			return "", fmt.Errorf("pod sandbox %s: %w", name, err)
		}
		// Stored before anything exists, so recovery can undo a crash
		// in the middle.
		rec.State = sandboxCreating
		if err := s.state.saveSandbox(rec); err != nil {
			return "", fmt.Errorf("store sandbox record: %w", err)
		}
		defer func() {
			if retErr == nil {
				return
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if err := s.net.Teardown(cctx, rec.Network); err != nil {
				// Best effort, as the kubelet's other runtimes do: a DEL
				// that fails now (often the same broken config that failed
				// ADD) would fail on every retry too.
				log.Error("tearing down the network of a failed pod sandbox; IPs or rules its CNI plugins hold may be left",
					logging.KeyErr, err)
			}
			s.state.meta.Delete(store.Sandboxes, id)
		}()
		log.Info("setting up pod network", "netns", rec.Network.NetNS, "cni_config", rec.Network.ConfFile)
		// The ADD result is stored before the addresses move to the guest,
		// so a teardown after a crash can give them back for CNI DEL.
		if err := s.net.Setup(ctx, rec.Network, func() error { return s.state.saveSandbox(rec) }); err != nil {
			return "", fmt.Errorf("pod sandbox %s: %w", name, err)
		}
		rec.State = sandboxReady
		log.Info("pod network ready", "ips", fmt.Sprint(rec.Network.IPs()))
	}
	if err := s.state.saveSandbox(rec); err != nil {
		return "", fmt.Errorf("store sandbox record: %w", err)
	}
	sb := &sandbox{config: cfg, rec: rec}
	s.state.addSandbox(sb)
	s.sandboxEvent(ctx, sb, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	log.Info("pod sandbox ready")
	return id, nil
}
