package cri

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/store"
)

// fakeNet is a stateful in-memory pod network: it hands out 10.88.0.N,
// tracks which sandboxes have a network and which VMs are plugged, and
// records every call.
type fakeNet struct {
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

func newFakeNet() *fakeNet {
	return &fakeNet{next: 5, live: map[string]bool{}, plugged: map[string]bool{}, pods: map[string]cni.PodInfo{}, guests: map[string]cni.Guest{}}
}

func (f *fakeNet) record(call, id string) {
	f.calls = append(f.calls, call+" "+id[:8])
}

func (f *fakeNet) Ready() error { f.mu.Lock(); defer f.mu.Unlock(); return f.readyErr }

func (f *fakeNet) Plan(id string, pod cni.PodInfo) (*cni.Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("plan", id)
	if f.readyErr != nil {
		return nil, f.readyErr
	}
	f.pods[id] = pod
	return &cni.Attachment{SandboxID: id, NetNS: "/run/netns/vmpod-" + id, ConfFile: "/etc/cni/net.d/10-test.conflist", ConfList: []byte(`{}`)}, nil
}

func (f *fakeNet) Setup(ctx context.Context, att *cni.Attachment, persist func() error) error {
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

func (f *fakeNet) Teardown(ctx context.Context, att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("teardown", att.SandboxID)
	delete(f.live, att.SandboxID)
	delete(f.plugged, att.SandboxID)
	return nil
}

func (f *fakeNet) PrepareVM(att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("prepare", att.SandboxID)
	if !f.live[att.SandboxID] {
		return fmt.Errorf("PrepareVM on a sandbox without network")
	}
	return nil
}

func (f *fakeNet) PlugVM(att *cni.Attachment, g cni.Guest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("plug", att.SandboxID)
	f.plugged[att.SandboxID] = true
	f.guests[att.SandboxID] = g
	return nil
}

func (f *fakeNet) UnplugVM(att *cni.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("unplug", att.SandboxID)
	delete(f.plugged, att.SandboxID)
	return nil
}

func (f *fakeNet) ServeDHCP(att *cni.Attachment, g cni.Guest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("dhcp", att.SandboxID)
	f.guests[att.SandboxID] = g
	return nil
}

func (f *fakeNet) Usage(att *cni.Attachment) ([]cni.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.live[att.SandboxID] {
		return nil, fmt.Errorf("no network")
	}
	return []cni.Usage{{Name: "eth0", RxBytes: 1000, TxBytes: 2000}}, nil
}

func (f *fakeNet) callsFor(id string) []string {
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

func (f *fakeNet) liveCount() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.live) }

func TestPodNetworkLifecycle(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	pod.Hostname = "web-host"
	pod.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}}
	pod.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: 18080}, {ContainerPort: 9090}}
	pod.Annotations[annIngressBandwidth] = "10M"
	sbID := e.runPod(t, pod)

	st, err := e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.Network.Ip != "10.88.0.5" || len(st.Status.Network.AdditionalIps) != 1 || st.Status.Network.AdditionalIps[0].Ip != "fd88::5" {
		t.Fatalf("network status: %v", st.Status.Network)
	}
	if !strings.Contains(st.Info["info"], `"netns":"/run/netns/vmpod-`+sbID) {
		t.Fatalf("verbose info lacks the netns: %s", st.Info["info"])
	}
	pi := e.net.pods[sbID]
	if len(pi.PortMappings) != 1 || pi.PortMappings[0] != (cni.PortMapping{HostPort: 18080, ContainerPort: 8080, Protocol: "tcp"}) {
		t.Fatalf("port mappings passed to CNI: %+v", pi.PortMappings)
	}
	if pi.Bandwidth == nil || pi.Bandwidth.IngressRate != 10_000_000 || pi.Bandwidth.EgressRate != 0 {
		t.Fatalf("bandwidth passed to CNI: %+v", pi.Bandwidth)
	}

	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	xml, err := e.lv.XML(context.Background(), e.record(t, id).Domain)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<mac address=\"52:54:00:00:00:05\"></mac>", "<target dev=\"vmt" + sbID[:10] + "00\" managed=\"no\"></target>"} {
		if !strings.Contains(xml, want) {
			t.Errorf("domain XML lacks %s:\n%s", want, xml)
		}
	}
	e.mustStart(t, id)
	if got := e.net.guests[sbID]; got.Hostname != "web-host" || !slices.Equal(got.DNSServers, []string{"10.96.0.10"}) {
		t.Fatalf("guest info for DHCP: %+v", got)
	}
	ps, err := e.svc.PodSandboxStats(lcCtx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: sbID})
	if err != nil {
		t.Fatal(err)
	}
	if nu := ps.Stats.Linux.Network; nu == nil || nu.DefaultInterface.Name != "eth0" || nu.DefaultInterface.RxBytes.Value != 1000 || nu.DefaultInterface.TxBytes.Value != 2000 {
		t.Fatalf("pod network stats: %v", ps.Stats.Linux.Network)
	}
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	st, _ = e.svc.PodSandboxStatus(lcCtx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbID})
	if st.Status.Network.Ip != "" {
		t.Fatalf("a stopped pod still reports IP %s", st.Status.Network.Ip)
	}
	// A retried stop and the remove do not run CNI DEL again.
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RemovePodSandbox(lcCtx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	want := []string{"plan", "setup", "prepare", "plug", "teardown"}
	if got := e.net.callsFor(sbID); !slices.Equal(got, want) {
		t.Fatalf("network calls: got %v, want %v", got, want)
	}
	if e.net.liveCount() != 0 {
		t.Fatal("a network is left")
	}
}

func TestRunPodSandboxNetworkFailureLeavesNothing(t *testing.T) {
	e := newLCEnv(t)
	e.net.setupErr = fmt.Errorf("CNI ADD of network %q: plugin bridge failed", "test")
	pod := lcPod("broken")
	_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err == nil || !strings.Contains(err.Error(), "CNI ADD") {
		t.Fatalf("RunPodSandbox: got %v, want the CNI error", err)
	}
	if n := e.net.liveCount(); n != 0 {
		t.Fatalf("%d networks left", n)
	}
	if recs := e.sandboxRecords(t); len(recs) != 0 {
		t.Fatalf("sandbox records left: %+v", recs)
	}
	// The name is free again.
	e.net.setupErr = nil
	e.runPod(t, pod)
}

func TestRunPodSandboxRefusesBadBandwidth(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("bw")
	pod.Annotations[annEgressBandwidth] = "fast"
	_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), annEgressBandwidth) {
		t.Fatalf("got %v, want InvalidArgument naming %s", err, annEgressBandwidth)
	}
	if len(e.net.calls) != 0 || len(e.sandboxRecords(t)) != 0 {
		t.Fatalf("calls %v, records %d after a refused pod", e.net.calls, len(e.sandboxRecords(t)))
	}
}

func TestStatusNetworkNotReadyWithoutCNIConfig(t *testing.T) {
	e := newLCEnv(t)
	e.net.readyErr = fmt.Errorf("no CNI network config in /etc/cni/net.d (cni_conf_dir): %w", errdefs.ErrFailedPrecondition)
	resp, err := e.svc.Status(lcCtx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && (c.Status || c.Reason != "NetworkPluginNotReady" || !strings.Contains(c.Message, "/etc/cni/net.d")) {
			t.Fatalf("NetworkReady condition: %+v", c)
		}
	}
	_, err = e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: lcPod("x")})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("RunPodSandbox without CNI config: got %v, want FailedPrecondition", err)
	}
}

func TestRecoverTearsDownHalfCreatedSandboxAndRestartsDHCP(t *testing.T) {
	e := newLCEnv(t)
	_, ctrID := e.runningVM(t, "running")
	runningSB := e.record(t, ctrID).SandboxID
	// A sandbox vmpod was killed in the middle of creating.
	half := sandboxRecord{ID: strings.Repeat("ab", 32), Name: "half_default_uid-half_0", State: sandboxCreating,
		Config: mustEncode(t, lcPod("half")), Network: &cni.Attachment{SandboxID: strings.Repeat("ab", 32), NetNS: "/run/netns/x"}}
	if err := e.meta.Put(store.Sandboxes, half.ID, half); err != nil {
		t.Fatal(err)
	}
	e.net.live[half.ID] = true
	svc := e.restart(t)
	if err := svc.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.net.callsFor(half.ID); !slices.Equal(got, []string{"teardown"}) {
		t.Fatalf("half-created sandbox: calls %v, want [teardown]", got)
	}
	for _, r := range e.sandboxRecords(t) {
		if r.ID == half.ID {
			t.Fatal("the half-created sandbox's record is still there")
		}
	}
	if calls := e.net.callsFor(runningSB); calls[len(calls)-1] != "dhcp" {
		t.Fatalf("running VM's pod: calls %v, want DHCP restarted last", calls)
	}
	// Its name is free.
	e.runPod(t, lcPod("half"))
}

func mustEncode(t *testing.T, c *runtimeapi.PodSandboxConfig) []byte {
	t.Helper()
	b, err := encodeSandboxConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPortForwardRPC(t *testing.T) {
	e := newLCEnv(t)
	e.svc.SetStreamServer(fakeStreams{})
	sbID := e.runPod(t, lcPod("pf"))
	resp, err := e.svc.PortForward(lcCtx(t), &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{8080}})
	if err != nil || resp.Url == "" {
		t.Fatalf("PortForward: %v, %v", resp, err)
	}
	if _, err := e.svc.PortForward(lcCtx(t), &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{70000}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("port 70000: got %v, want InvalidArgument", err)
	}
	if _, err := e.svc.PortForward(lcCtx(t), &runtimeapi.PortForwardRequest{PodSandboxId: "nope"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown sandbox: got %v, want NotFound", err)
	}
	if _, err := e.svc.StopPodSandbox(lcCtx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.PortForward(lcCtx(t), &runtimeapi.PortForwardRequest{PodSandboxId: sbID, Port: []int32{8080}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("stopped pod: got %v, want FailedPrecondition", err)
	}
}
