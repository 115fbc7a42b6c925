package libvirttools

import (
	"context"
	"errors"
	"time"
)

// Pair is a Connection that spreads calls over three libvirt connections.
// libvirtd serves at most max_client_requests calls at a time per client
// connection (5 by default), and a domain start, shutdown or destroy takes
// 0.5–1.7 s under TCG; with five of them in flight on one connection every
// other call waits behind them (measured: a 60 ms CreateContainer took
// 1.27 s while ten pods started). So the slow lifecycle calls use one
// connection, everything quick (define, status, list, XML, resume,
// cputune) another, and guest agent calls a third: an agent call waits up
// to its timeout for a guest that has not started its agent yet (every
// booting VM's command runner and probes ask), and five of them must not
// hold up the VM starts, nor a start the agent calls.
type Pair struct {
	slow, quick, agent *Libvirt
}

var _ Connection = (*Pair)(nil)

// NewPair returns a Pair for uri. Like NewLibvirt, it connects lazily.
// Events, when o asks for them, come from the quick connection only (each
// event once).
func NewPair(uri string, o Options) *Pair {
	quick := NewLibvirt(uri, o)
	o.Events = false
	return &Pair{slow: NewLibvirt(uri, o), quick: quick, agent: NewLibvirt(uri, o)}
}

// Subscribe implements Events.
func (p *Pair) Subscribe() (*EventSubscription, error) { return p.quick.Subscribe() }

// Ping implements Connection.
func (p *Pair) Ping(ctx context.Context) (Info, error) { return p.quick.Ping(ctx) }

// Define implements Domains.
func (p *Pair) Define(ctx context.Context, xml string) error { return p.quick.Define(ctx, xml) }

// Start implements Domains.
func (p *Pair) Start(ctx context.Context, name string, paused bool) error {
	return p.slow.Start(ctx, name, paused)
}

// Resume implements Domains.
func (p *Pair) Resume(ctx context.Context, name string) error { return p.quick.Resume(ctx, name) }

// Shutdown implements Domains.
func (p *Pair) Shutdown(ctx context.Context, name string) error { return p.slow.Shutdown(ctx, name) }

// Destroy implements Domains.
func (p *Pair) Destroy(ctx context.Context, name string) error { return p.slow.Destroy(ctx, name) }

// Undefine implements Domains.
func (p *Pair) Undefine(ctx context.Context, name string) error { return p.slow.Undefine(ctx, name) }

// Status implements Domains.
func (p *Pair) Status(ctx context.Context, name string) (DomainStatus, error) {
	return p.quick.Status(ctx, name)
}

// List implements Domains.
func (p *Pair) List(ctx context.Context, prefix string) ([]DomainStatus, error) {
	return p.quick.List(ctx, prefix)
}

// XML implements Domains.
func (p *Pair) XML(ctx context.Context, name string) (string, error) { return p.quick.XML(ctx, name) }

// SetCPUTune implements Domains.
func (p *Pair) SetCPUTune(ctx context.Context, name string, shares, periodUS uint64, quotaUS int64) error {
	return p.quick.SetCPUTune(ctx, name, shares, periodUS, quotaUS)
}

// WaitShutoff implements Domains; it polls on the quick connection.
func (p *Pair) WaitShutoff(ctx context.Context, name string, timeout time.Duration) (bool, error) {
	return p.quick.WaitShutoff(ctx, name, timeout)
}

// AgentCommand implements Domains; guest agent calls can take seconds, so
// they have their own connection.
func (p *Pair) AgentCommand(ctx context.Context, name, command string, timeout time.Duration) (string, error) {
	return p.agent.AgentCommand(ctx, name, command, timeout)
}

// Stats implements Domains.
func (p *Pair) Stats(ctx context.Context, names []string) ([]DomainStats, error) {
	return p.quick.Stats(ctx, names)
}

// Close implements Connection.
func (p *Pair) Close() error { return errors.Join(p.slow.Close(), p.quick.Close(), p.agent.Close()) }
