package cri

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/store"
)

func TestPodNetworkLifecycle(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	pod.Hostname = "web-host"
	pod.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}}
	pod.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: 18080}, {ContainerPort: 9090}}
	pod.Annotations[podspec.AnnIngressBandwidth] = "10M"
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
	pi := e.Net.Pod(sbID)
	if len(pi.PortMappings) != 1 || pi.PortMappings[0] != (cni.PortMapping{HostPort: 18080, ContainerPort: 8080, Protocol: "tcp"}) {
		t.Fatalf("port mappings passed to CNI: %+v", pi.PortMappings)
	}
	if pi.Bandwidth == nil || pi.Bandwidth.IngressRate != 10_000_000 || pi.Bandwidth.EgressRate != 0 {
		t.Fatalf("bandwidth passed to CNI: %+v", pi.Bandwidth)
	}

	id := e.mustCreate(t, sbID, pod, lcContainer("vm"))
	xml, err := e.LV.XML(context.Background(), e.Record(t, id).Domain)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<mac address=\"52:54:00:00:00:05\"></mac>", "<target dev=\"vmt" + sbID[:10] + "00\" managed=\"no\"></target>"} {
		if !strings.Contains(xml, want) {
			t.Errorf("domain XML lacks %s:\n%s", want, xml)
		}
	}
	e.mustStart(t, id)
	if got := e.Net.Guest(sbID); got.Hostname != "web-host" || !slices.Equal(got.DNSServers, []string{"10.96.0.10"}) {
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
	if got := e.Net.CallsFor(sbID); !slices.Equal(got, want) {
		t.Fatalf("network calls: got %v, want %v", got, want)
	}
	if e.Net.LiveCount() != 0 {
		t.Fatal("a network is left")
	}
}

func TestRunPodSandboxNetworkFailureLeavesNothing(t *testing.T) {
	e := newLCEnv(t)
	e.Net.SetSetupErr(fmt.Errorf("CNI ADD of network %q: plugin bridge failed", "test"))
	pod := lcPod("broken")
	_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err == nil || !strings.Contains(err.Error(), "CNI ADD") {
		t.Fatalf("RunPodSandbox: got %v, want the CNI error", err)
	}
	if n := e.Net.LiveCount(); n != 0 {
		t.Fatalf("%d networks left", n)
	}
	if recs := e.SandboxRecords(t); len(recs) != 0 {
		t.Fatalf("sandbox records left: %+v", recs)
	}
	// The name is free again.
	e.Net.SetSetupErr(nil)
	e.runPod(t, pod)
}

func TestRunPodSandboxRefusesBadBandwidth(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("bw")
	pod.Annotations[podspec.AnnEgressBandwidth] = "fast"
	_, err := e.svc.RunPodSandbox(lcCtx(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), podspec.AnnEgressBandwidth) {
		t.Fatalf("got %v, want InvalidArgument naming %s", err, podspec.AnnEgressBandwidth)
	}
	if calls := e.Net.Calls(); len(calls) != 0 || len(e.SandboxRecords(t)) != 0 {
		t.Fatalf("calls %v, records %d after a refused pod", calls, len(e.SandboxRecords(t)))
	}
}

func TestStatusNetworkNotReadyWithoutCNIConfig(t *testing.T) {
	e := newLCEnv(t)
	e.Net.SetReadyErr(fmt.Errorf("no CNI network config in /etc/cni/net.d (cni_conf_dir): %w", errdefs.ErrFailedPrecondition))
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
	runningSB := e.Record(t, ctrID).SandboxID
	// A sandbox vmpod was killed in the middle of creating.
	half := lifecycle.SandboxRecord{ID: strings.Repeat("ab", 32), Name: "half_default_uid-half_0", State: lifecycle.SandboxCreating,
		Config: mustEncode(t, lcPod("half")), Network: &cni.Attachment{SandboxID: strings.Repeat("ab", 32), NetNS: "/run/netns/x"}}
	if err := e.Meta.Put(store.Sandboxes, half.ID, half); err != nil {
		t.Fatal(err)
	}
	e.Net.SetLive(half.ID)
	e.restart(t)
	if err := e.Pods.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.Net.CallsFor(half.ID); !slices.Equal(got, []string{"teardown"}) {
		t.Fatalf("half-created sandbox: calls %v, want [teardown]", got)
	}
	for _, r := range e.SandboxRecords(t) {
		if r.ID == half.ID {
			t.Fatal("the half-created sandbox's record is still there")
		}
	}
	if calls := e.Net.CallsFor(runningSB); calls[len(calls)-1] != "dhcp" {
		t.Fatalf("running VM's pod: calls %v, want DHCP restarted last", calls)
	}
	// Its name is free.
	e.runPod(t, lcPod("half"))
}

func mustEncode(t *testing.T, c *runtimeapi.PodSandboxConfig) []byte {
	t.Helper()
	b, err := protojson.Marshal(c)
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
