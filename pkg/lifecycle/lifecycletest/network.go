package lifecycletest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vmpod/vmpod/pkg/cni"
)

// Network is a stateful in-memory pod network: it hands out 10.88.0.N,
// tracks which sandboxes have a network and which VMs are plugged, and
// records every call.
type Network struct {
	mu       sync.Mutex
	readyErr error
	setupErr error
	next     int
	live     map[string]bool // sandbox ID -> set up, not torn down
	plugged  map[string]bool
	pods     map[string]cni.PodInfo
	guests   map[string]cni.Guest
	calls    []string
}

// NewNetwork returns a ready network.
func NewNetwork() *Network {
	return &Network{next: 5, live: map[string]bool{}, plugged: map[string]bool{}, pods: map[string]cni.PodInfo{}, guests: map[string]cni.Guest{}}
}

func (f *Network) record(call, id string) {
	f.calls = append(f.calls, call+" "+id[:8])
}

// SetReadyErr makes Ready (and Plan) fail with err; nil makes it ready.
func (f *Network) SetReadyErr(err error) { f.mu.Lock(); f.readyErr = err; f.mu.Unlock() }

// SetSetupErr makes Setup fail with err (after a half set-up).
func (f *Network) SetSetupErr(err error) { f.mu.Lock(); f.setupErr = err; f.mu.Unlock() }

// Ready implements lifecycle.Network.
func (f *Network) Ready() error { f.mu.Lock(); defer f.mu.Unlock(); return f.readyErr }

// Plan implements lifecycle.Network.
func (f *Network) Plan(id string, pod cni.PodInfo) (*cni.Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("plan", id)
	if f.readyErr != nil {
		return nil, f.readyErr
	}
	f.pods[id] = pod
	return &cni.Attachment{SandboxID: id, NetNS: "/run/netns/vmpod-" + id, ConfFile: "/etc/cni/net.d/10-test.conflist", ConfList: []byte(`{}`)}, nil
}

// Setup implements lifecycle.Network.
func (f *Network) Setup(ctx context.Context, att *cni.Attachment, persist func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("setup", att.SandboxID)
	f.live[att.SandboxID] = true // half set up counts: teardown must clean it
	if f.setupErr != nil {
		return f.setupErr
	}
	att.Interfaces = []cni.Interface{{
		Name: "eth0", MAC: fmt.Sprintf("52:54:00:00:00:%02x", f.next), MTU: 1450,
		Tap: "vmt" + att.SandboxID[:10] + "00", Bridge: "vmbr0",
		Addresses: []cni.Address{{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.88.0.%d/24", f.next)), Gateway: netip.MustParseAddr("10.88.0.1")},
			{Prefix: netip.MustParsePrefix(fmt.Sprintf("fd88::%d/64", f.next))}},
		Routes: []cni.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0")}},
	}}
	f.next++
	if persist != nil {
		return persist()
	}
	return nil
}

// Teardown implements lifecycle.Network.
func (f *Network) Teardown(ctx context.Context, att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("teardown", att.SandboxID)
	delete(f.live, att.SandboxID)
	delete(f.plugged, att.SandboxID)
	return nil
}

// PrepareVM implements lifecycle.Network.
func (f *Network) PrepareVM(att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("prepare", att.SandboxID)
	if !f.live[att.SandboxID] {
		return fmt.Errorf("PrepareVM on a sandbox without network")
	}
	return nil
}

// PlugVM implements lifecycle.Network.
func (f *Network) PlugVM(att *cni.Attachment, g cni.Guest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("plug", att.SandboxID)
	f.plugged[att.SandboxID] = true
	f.guests[att.SandboxID] = g
	return nil
}

// UnplugVM implements lifecycle.Network.
func (f *Network) UnplugVM(att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("unplug", att.SandboxID)
	delete(f.plugged, att.SandboxID)
	return nil
}

// ServeDHCP implements lifecycle.Network.
func (f *Network) ServeDHCP(att *cni.Attachment, g cni.Guest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("dhcp", att.SandboxID)
	f.guests[att.SandboxID] = g
	return nil
}

// Usage implements lifecycle.Network.
func (f *Network) Usage(att *cni.Attachment) ([]cni.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.live[att.SandboxID] {
		return nil, fmt.Errorf("no network")
	}
	return []cni.Usage{{Name: "eth0", RxBytes: 1000, TxBytes: 2000}}, nil
}

// CallsFor lists the calls made for a sandbox, in order.
func (f *Network) CallsFor(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasSuffix(c, " "+id[:8]) {
			out = append(out, strings.Fields(c)[0])
		}
	}
	return out
}

// LiveCount counts the sandboxes with a network set up.
func (f *Network) LiveCount() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.live) }

// Pod is what Plan was told about a sandbox's pod.
func (f *Network) Pod(id string) cni.PodInfo { f.mu.Lock(); defer f.mu.Unlock(); return f.pods[id] }

// Guest is what the DHCP servers of a sandbox were told.
func (f *Network) Guest(id string) cni.Guest { f.mu.Lock(); defer f.mu.Unlock(); return f.guests[id] }

// Plugged reports whether a sandbox's VM is plugged in.
func (f *Network) Plugged(id string) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.plugged[id] }

// Calls are every call so far, as "call sandbox-ID-prefix".
func (f *Network) Calls() []string { f.mu.Lock(); defer f.mu.Unlock(); return slices.Clone(f.calls) }

// SetLive marks a sandbox's network as set up (as a crash after CNI ADD
// would leave it).
func (f *Network) SetLive(id string) { f.mu.Lock(); f.live[id] = true; f.mu.Unlock() }
