package router

import (
	"strings"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// heldLists keeps vmpod's last complete answers to ListPodSandbox and
// ListContainers (those asked with no filter, as the kubelet's relist asks
// every second), to stand in for vmpod's part of the lists while vmpod does
// not answer.
//
// Why: when the DaemonSet's pod restarts or is upgraded, vmpod is away for
// a few seconds while its VMs keep running. A list without them tells the
// kubelet that the VM pods' sandboxes and containers are gone: it marks the
// containers terminated (ContainerStatusUnknown) and starts new sandboxes
// for the pods, and a RunPodSandbox that reaches vmpod once it is back
// builds a second VM for a pod whose VM never stopped. With the held lists
// the kubelet sees the VM pods unchanged; the calls it makes for them
// meanwhile (status, stop, exec) fail with Unavailable and are retried.
//
// The lists are held until vmpod answers again, however long that takes:
// the VMs keep running without vmpod, so "as last seen" is closer to the
// truth than "gone", and a VM pod deleted meanwhile stays Terminating until
// vmpod can stop its VM instead of leaving the VM behind. They live in the
// router's memory only: a router restarted while vmpod is away has none
// and returns the primary's answer alone.
type heldLists struct {
	mu         sync.Mutex
	sandboxes  []*runtimeapi.PodSandbox // nil: no complete answer yet
	containers []*runtimeapi.Container
}

// keepSandboxes records vmpod's answer to an unfiltered ListPodSandbox.
func (h *heldLists) keepSandboxes(items []*runtimeapi.PodSandbox) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sandboxes = append([]*runtimeapi.PodSandbox{}, items...)
}

// keepContainers records vmpod's answer to an unfiltered ListContainers.
func (h *heldLists) keepContainers(items []*runtimeapi.Container) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.containers = append([]*runtimeapi.Container{}, items...)
}

// heldSandboxes returns the held sandboxes that f selects, with vmpod's
// filter semantics (ID prefix, state, every selector label), and whether
// any list is held.
func (h *heldLists) heldSandboxes(f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*runtimeapi.PodSandbox
	for _, s := range h.sandboxes {
		if f.GetId() != "" && !strings.HasPrefix(s.GetId(), f.GetId()) ||
			f.GetState() != nil && f.GetState().GetState() != s.GetState() ||
			!labelsMatch(s.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, s)
	}
	return out, h.sandboxes != nil
}

// heldContainers returns the held containers that f selects (ID prefix,
// sandbox ID prefix, state, every selector label), and whether any list is
// held.
func (h *heldLists) heldContainers(f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*runtimeapi.Container
	for _, c := range h.containers {
		if f.GetId() != "" && !strings.HasPrefix(c.GetId(), f.GetId()) ||
			f.GetPodSandboxId() != "" && !strings.HasPrefix(c.GetPodSandboxId(), f.GetPodSandboxId()) ||
			f.GetState() != nil && f.GetState().GetState() != c.GetState() ||
			!labelsMatch(c.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, c)
	}
	return out, h.containers != nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// unfilteredSandboxes reports whether f selects every sandbox.
func unfilteredSandboxes(f *runtimeapi.PodSandboxFilter) bool {
	return f.GetId() == "" && f.GetState() == nil && len(f.GetLabelSelector()) == 0
}

// unfilteredContainers reports whether f selects every container.
func unfilteredContainers(f *runtimeapi.ContainerFilter) bool {
	return f.GetId() == "" && f.GetPodSandboxId() == "" && f.GetState() == nil && len(f.GetLabelSelector()) == 0
}
