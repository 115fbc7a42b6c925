package libvirttools

import "github.com/vmpod/vmpod/pkg/broadcast"

// EventKind says which field of an Event is set.
type EventKind int

// The event kinds.
const (
	// EventDomain: a domain changed state (Event.Domain).
	EventDomain EventKind = iota
	// EventAgent: a domain's guest agent connected or disconnected
	// (Event.Agent).
	EventAgent
	// EventConnected: a new connection to libvirtd is up and watching
	// events, the first one or one after a reconnect. Events of the time
	// in between were lost: a subscriber reconciles its view with a List.
	EventConnected
)

// String is the kind's name.
func (k EventKind) String() string {
	return [...]string{"domain", "agent", "connected"}[k]
}

// Event is one thing libvirt reported.
type Event struct {
	Kind   EventKind
	Domain DomainEvent // Kind == EventDomain
	Agent  AgentEvent  // Kind == EventAgent
}

// DomainEvent is a domain's new state, from libvirt's lifecycle event.
type DomainEvent struct {
	Name   string
	State  DomainState
	Reason ShutoffReason // when State is DomainShutoff
	// Detail is libvirt's event and detail, e.g. "stopped/shutdown", for
	// logs.
	Detail string
}

// AgentEvent says that a domain's QEMU guest agent connected to its
// channel or went away.
type AgentEvent struct {
	Name      string
	Connected bool
}

// EventSubscription is one subscriber's events. A subscriber that falls
// eventBufferSize events behind is disconnected (its Done is closed, Err
// wraps errdefs.ErrResourceExhausted): it subscribes again and
// reconciles.
type EventSubscription = broadcast.Subscription[Event]

// eventBufferSize is how many events a subscriber may fall behind.
const eventBufferSize = 1024

// Events is libvirt's event stream in vmpod's terms.
type Events interface {
	// Subscribe starts a subscription to every later event: lifecycle and
	// guest agent events of every domain, and EventConnected after every
	// (re)connection to libvirtd. Events while libvirtd is unreachable are
	// lost (EventConnected says when to look). It fails with
	// errdefs.ErrUnavailable after Close.
	Subscribe() (*EventSubscription, error)
}

// newEvents returns the broadcaster of a Connection's events.
func newEvents() *broadcast.Broadcaster[Event] {
	return broadcast.New[Event](eventBufferSize, "libvirt event")
}
