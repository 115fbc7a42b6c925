package lifecycle

// Events for the kubelet's Evented PLEG (CRI GetContainerEvents). They are
// published from the state transitions of the records themselves (the
// records' change hooks), never by asking an RPC handler. ID is the
// container's ID, or the sandbox's own ID for the sandbox's events, as
// containerd does: the kubelet drops a pod from its cache on the DELETED
// event whose ID is the sandbox's.
//
//	EventCreated  a container's record went CREATING -> CREATED (domain
//	              defined); a sandbox's CREATING -> READY (with EventStarted)
//	EventStarted  a container's CREATED -> RUNNING (the guest runs)
//	EventStopped  a container's RUNNING -> EXITED, however it happened:
//	              StopContainer, StopPodSandbox, RemoveContainer of a
//	              running VM, the guest's own poweroff or crash or a destroy
//	              outside vmpod (seen by Monitor from libvirt's event within
//	              milliseconds, or by a status refresh or its periodic
//	              check); a sandbox's READY -> NOTREADY
//	EventDeleted  a container's or sandbox's record was removed
//
// Every event carries the pod's sandbox and all the pod's containers as
// they are right after the change (the kubelet builds the pod's status from
// the event alone), and the time of the change. Events are built and
// published one at a time, so their order for every subscriber is the
// order of their times.
//
// Slow subscribers: each has a buffer of eventBufferSize events and
// publishing never waits, so a stuck client cannot hold up StopContainer
// or the exit monitor. A subscriber whose buffer is full is disconnected:
// its subscription ends with ResourceExhausted. Dropping the event instead
// would leave the kubelet's pod cache silently wrong until its next
// periodic relist (minutes with Evented PLEG); an ended stream makes the
// kubelet relist at once and subscribe again. CloseEvents ends every
// subscription with Unavailable. Events are not kept for later
// subscribers: a client that (re)connects lists first, as the kubelet
// does.
//
// No events come from a create or start that failed (the caller learns
// that from the error): their records never reach CREATED or RUNNING.

import (
	"context"

	"github.com/vmpod/vmpod/pkg/broadcast"
	"github.com/vmpod/vmpod/pkg/logging"
)

// EventType is what happened.
type EventType int

// The event types.
const (
	EventCreated EventType = iota
	EventStarted
	EventStopped
	EventDeleted
)

// String is the type's name: created, started, stopped or deleted.
func (t EventType) String() string {
	return [...]string{"created", "started", "stopped", "deleted"}[t]
}

// Event is one lifecycle event.
type Event struct {
	Type EventType
	// ID is the container's ID, or the sandbox's for a sandbox event.
	ID string
	// At is the time of the change, Unix nanoseconds.
	At int64
	// Sandbox is the pod's sandbox after the change; nil when the
	// container's sandbox is unknown. SandboxGone says it was removed (its
	// last record, reported not ready).
	Sandbox     *SandboxView
	SandboxGone bool
	// Containers are the pod's containers past CREATING after the change.
	Containers []ContainerView
}

// eventBufferSize is how many events a subscriber may fall behind before
// it is disconnected. The kubelet reads its stream into a channel of 1000.
const eventBufferSize = 256

// Subscription is one subscriber's events.
type Subscription = broadcast.Subscription[Event]

// Subscribe starts a subscription to every later event; it fails with
// Unavailable after CloseEvents.
func (c *Controller) Subscribe() (*Subscription, error) { return c.events.Subscribe() }

// Subscribers counts the subscriptions.
func (c *Controller) Subscribers() int { return c.events.Count() }

// CloseEvents ends every subscription (with Unavailable) and refuses new
// ones, so that a graceful stop does not wait for endless event streams.
func (c *Controller) CloseEvents() { c.events.Close() }

// containerChanged is every container record's change hook.
func (c *Controller) containerChanged(ct *container, old, new ContainerRecord) {
	var typ EventType
	switch {
	case old.State == ContainerCreating && new.State == ContainerCreated:
		typ = EventCreated
	case old.State == ContainerCreated && new.State == ContainerRunning:
		typ = EventStarted
	case old.State == ContainerRunning && new.State == ContainerExited:
		typ = EventStopped
	default:
		return
	}
	c.publish(c.hookContext(), typ, new.ID, new.SandboxID, nil, false)
}

// hookContext is the context events from change hooks are published with.
func (c *Controller) hookContext() context.Context {
	return logging.With(context.Background(), c.log)
}

// sandboxChanged is every sandbox record's change hook.
func (c *Controller) sandboxChanged(sb *sandbox, old, new SandboxRecord) {
	switch {
	case old.State == SandboxCreating && new.State == SandboxReady:
		c.publish(c.hookContext(), EventCreated, new.ID, new.ID, sb, false)
		c.publish(c.hookContext(), EventStarted, new.ID, new.ID, sb, false)
	case old.State != SandboxNotReady && new.State == SandboxNotReady:
		c.publish(c.hookContext(), EventStopped, new.ID, new.ID, sb, false)
	}
}

// publishContainerGone publishes a removed container's DELETED event.
func (c *Controller) publishContainerGone(ctx context.Context, rec ContainerRecord) {
	c.publish(ctx, EventDeleted, rec.ID, rec.SandboxID, nil, false)
}

// publishSandboxGone publishes a removed sandbox's DELETED event.
func (c *Controller) publishSandboxGone(ctx context.Context, sb *sandbox) {
	c.publish(ctx, EventDeleted, sb.Get().ID, sb.Get().ID, sb, true)
}

// publish builds the event (the pod as it is now) and publishes it. sb is
// the sandbox when the caller has it (gone: it was just removed), else it
// is looked up: a container whose sandbox is unknown gets an event without
// a sandbox, as containerd sends it (the kubelet ignores such events).
func (c *Controller) publish(ctx context.Context, typ EventType, id, sandboxID string, sb *sandbox, gone bool) {
	c.metrics.IncEvent(typ.String())
	// Nobody listens: skip building the statuses.
	if c.events.Count() == 0 {
		return
	}
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	ev := Event{Type: typ, ID: id, At: c.now().UnixNano()}
	if sb == nil {
		sb, _ = c.reg.sandbox(sandboxID)
	}
	if sb != nil {
		v := sb.view()
		ev.Sandbox, ev.SandboxGone = &v, gone
	}
	for _, ct := range c.reg.containersOf(sandboxID) {
		if v := ct.view(); v.State != ContainerCreating {
			ev.Containers = append(ev.Containers, v)
		}
	}
	if n := c.events.Publish(ev); n > 0 {
		for range n {
			c.metrics.IncEventSubscriberDropped()
		}
		logging.From(ctx).Warn("container event subscriber disconnected: it did not keep up (buffer full); it must relist",
			"subscribers", n, "buffer", c.events.Size(), logging.KeyContainerID, id, "event", typ.String())
	}
}
