package cri

// Container events for the kubelet's Evented PLEG (GetContainerEvents, in
// container_events.go). This file holds the broadcaster and the hooks the
// lifecycle calls.
//
// What triggers each event. ContainerId is the container's ID, or the
// sandbox's own ID for the sandbox's events, as containerd does: the
// kubelet drops a pod from its cache on the DELETED event whose ID is the
// sandbox's.
//
//	CONTAINER_CREATED_EVENT  CreateContainer defined the VM (CREATED);
//	                         RunPodSandbox recorded the sandbox (sandbox ID)
//	CONTAINER_STARTED_EVENT  StartContainer: the guest runs (RUNNING);
//	                         RunPodSandbox: the sandbox is READY (sandbox ID)
//	CONTAINER_STOPPED_EVENT  the VM stopped (EXITED), however it happened:
//	                         StopContainer, StopPodSandbox, RemoveContainer of
//	                         a running VM, the guest's own poweroff or crash
//	                         or a destroy outside vmpod (seen by Monitor
//	                         within a second, or by a status refresh);
//	                         StopPodSandbox made the sandbox NOTREADY (sandbox ID)
//	CONTAINER_DELETED_EVENT  RemoveContainer; RemovePodSandbox (sandbox ID)
//
// Every event carries the pod's sandbox status and the statuses of all the
// pod's containers as they are right after the change (the kubelet builds
// the pod's status from the event alone), and created_at, the time of the
// change in nanoseconds. Events are built and published one at a time, so
// their order on every stream is the order of their created_at.
//
// Slow subscribers: each stream has a buffer of eventBufferSize events and
// publishing never waits, so a stuck client cannot hold up StopContainer or
// the exit monitor. A subscriber whose buffer is full is disconnected: its
// stream ends with ResourceExhausted. Dropping the event instead would
// leave the kubelet's pod cache silently wrong until its next periodic
// relist (minutes with Evented PLEG); an ended stream makes the kubelet
// relist at once and subscribe again. When the service shuts down, streams
// end with Unavailable. Events are not kept for later subscribers: a
// client that (re)connects lists first, as the kubelet does.
//
// No events are sent for containers whose create or start failed (the
// kubelet learns that from the call's error), nor during start-up
// recovery (no stream can be open before the readiness gate opens).

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// eventBufferSize is how many events a subscriber may fall behind before
// it is disconnected. The kubelet reads its stream into a channel of 1000.
const eventBufferSize = 256

// eventSubscriber is one GetContainerEvents stream.
type eventSubscriber struct {
	ch chan *runtimeapi.ContainerEventResponse
	// done is closed when the broadcaster ends the subscription; err says
	// why and is set before.
	done chan struct{}
	err  error
}

// eventBroadcaster fans events out to subscribers without ever blocking
// the publisher.
type eventBroadcaster struct {
	size int

	mu     sync.Mutex
	subs   map[*eventSubscriber]struct{}
	closed bool
}

func newEventBroadcaster(size int) *eventBroadcaster {
	return &eventBroadcaster{size: size, subs: map[*eventSubscriber]struct{}{}}
}

// subscribe adds a subscriber; it fails with Unavailable after close.
func (b *eventBroadcaster) subscribe() (*eventSubscriber, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("vmpod is shutting down; no new event subscriptions: %w", errdefs.ErrUnavailable)
	}
	sub := &eventSubscriber{ch: make(chan *runtimeapi.ContainerEventResponse, b.size), done: make(chan struct{})}
	b.subs[sub] = struct{}{}
	return sub, nil
}

// unsubscribe removes a subscriber whose stream ended.
func (b *eventBroadcaster) unsubscribe(sub *eventSubscriber) {
	b.mu.Lock()
	delete(b.subs, sub)
	b.mu.Unlock()
}

// endLocked ends a subscription with err. b.mu is held.
func (b *eventBroadcaster) endLocked(sub *eventSubscriber, err error) {
	delete(b.subs, sub)
	sub.err = err
	close(sub.done)
}

// publish hands ev to every subscriber and returns how many it had to
// disconnect because their buffer was full.
func (b *eventBroadcaster) publish(ev *runtimeapi.ContainerEventResponse) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.ch <- ev:
		default:
			b.endLocked(sub, fmt.Errorf("container event stream fell %d events behind and was closed; relist and subscribe again: %w",
				b.size, errdefs.ErrResourceExhausted))
			dropped++
		}
	}
	return dropped
}

// count returns the number of subscribers.
func (b *eventBroadcaster) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// close ends every subscription with Unavailable and refuses new ones.
func (b *eventBroadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for sub := range b.subs {
		b.endLocked(sub, fmt.Errorf("vmpod is shutting down: %w", errdefs.ErrUnavailable))
	}
}

// CloseEventStreams ends every GetContainerEvents stream (with Unavailable)
// and refuses new ones, so that a graceful stop of the gRPC server does not
// wait for these endless streams.
func (s *Service) CloseEventStreams() { s.events.close() }

// containerEvent publishes an event for a container; rec is its record
// after the change. Callers hold no sandbox or container mu.
func (s *Service) containerEvent(ctx context.Context, rec containerRecord, typ runtimeapi.ContainerEventType) {
	sb, _ := s.state.getSandbox(rec.SandboxID)
	s.publishEvent(ctx, rec.ID, rec.SandboxID, sb, typ)
}

// sandboxEvent publishes events about the sandbox itself, under its ID. It
// works after the sandbox was removed (DELETED). Callers hold no sandbox
// or container mu.
func (s *Service) sandboxEvent(ctx context.Context, sb *sandbox, types ...runtimeapi.ContainerEventType) {
	for _, typ := range types {
		s.publishEvent(ctx, sb.rec.ID, sb.rec.ID, sb, typ)
	}
}

// publishEvent builds the event (the pod's statuses now) and publishes it.
// sb may be nil when the sandbox is unknown: the event then has no sandbox
// status, as containerd sends it (the kubelet ignores such events).
func (s *Service) publishEvent(ctx context.Context, id, sandboxID string, sb *sandbox, typ runtimeapi.ContainerEventType) {
	s.metrics.IncEvent(eventTypeName(typ))
	// Nobody listens: skip building the statuses.
	if s.events.count() == 0 {
		return
	}
	s.eventMu.Lock()
	defer s.eventMu.Unlock()
	ev := &runtimeapi.ContainerEventResponse{
		ContainerId:        id,
		ContainerEventType: typ,
		CreatedAt:          s.now().UnixNano(),
		PodSandboxStatus:   s.eventSandboxStatus(ctx, sb),
		ContainersStatuses: s.eventContainerStatuses(sandboxID),
	}
	if n := s.events.publish(ev); n > 0 {
		for range n {
			s.metrics.IncEventSubscriberDropped()
		}
		logging.From(ctx).Warn("container event subscriber disconnected: it did not keep up (buffer full); it must relist",
			"subscribers", n, "buffer", s.events.size, logging.KeyContainerID, id, "event", typ.String())
	}
}

// eventSandboxStatus is the sandbox's status for an event. A live sandbox's
// comes from PodSandboxStatus itself, so the event carries exactly what the
// RPC reports, the network status included: the kubelet takes the pod's IPs
// from the event. A removed sandbox's is rebuilt from its last record and
// reported NOTREADY.
func (s *Service) eventSandboxStatus(ctx context.Context, sb *sandbox) *runtimeapi.PodSandboxStatus {
	if sb == nil {
		return nil
	}
	sb.mu.Lock()
	rec, cfg := sb.rec, sb.config
	sb.mu.Unlock()
	if cur, err := s.state.getSandbox(rec.ID); err == nil && cur == sb {
		resp, err := s.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: rec.ID})
		if err == nil {
			return resp.GetStatus()
		}
		logging.From(ctx).Warn("pod sandbox status for a container event", logging.KeySandboxID, rec.ID, logging.KeyErr, err)
	}
	st := sandboxStatus(rec, cfg)
	st.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	return st
}

// eventContainerStatuses returns the statuses of a sandbox's containers
// from their records (no libvirt call).
func (s *Service) eventContainerStatuses(sandboxID string) []*runtimeapi.ContainerStatus {
	var out []*runtimeapi.ContainerStatus
	for _, c := range s.state.containersOf(sandboxID) {
		rec, cfg := c.snapshot()
		if rec.State == containerCreating {
			continue
		}
		out = append(out, containerStatus(rec, cfg))
	}
	return out
}

// eventTypeName is the type label of vmpod_container_events_total:
// "created", "started", "stopped" or "deleted".
func eventTypeName(t runtimeapi.ContainerEventType) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(t.String(), "CONTAINER_"), "_EVENT"))
}

// containerStarted is StartContainer's hook once the guest runs: the
// STARTED event and the start duration (from the domain's start, paused,
// until the guest runs with its console reader connected).
func (s *Service) containerStarted(ctx context.Context, rec containerRecord, took time.Duration) {
	s.metrics.ObserveVMStart(took)
	s.containerEvent(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
}
