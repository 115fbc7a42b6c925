package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// startVM runs a pod (no cgroup_parent) with one running VM and returns
// the sandbox and container IDs.
func startVM(t *testing.T, e *lifecycletest.Env, name string) (string, string) {
	t.Helper()
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod(name), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return sbID, id
}

// statsCalls are the fake libvirt's Stats calls so far.
func statsCalls(e *lifecycletest.Env) []string {
	var out []string
	for _, c := range e.LV.Calls() {
		if c == "Stats" || strings.HasPrefix(c, "Stats ") {
			out = append(out, c)
		}
	}
	return out
}

// TestStatsOnlyOwnDomains: a round names vmpod's running domains from its
// records, and only those: a foreign domain on the shared libvirtd (even
// one named with vmpod's prefix) and a stopped VM are not asked about.
func TestStatsOnlyOwnDomains(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	for i, name := range []string{"someone-elses", lifecycle.DomainPrefix + "not-ours"} {
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		doc, err := (&libvirtxml.Domain{Type: "qemu", Name: name, UUID: uuid, Memory: &libvirtxml.DomainMemory{Value: 65536, Unit: "KiB"}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.LV.Define(ctx, doc); err != nil {
			t.Fatal(err)
		}
		if err := e.LV.Start(ctx, name, false); err != nil {
			t.Fatal(err)
		}
	}
	_, a := startVM(t, e, "a")
	_, b := startVM(t, e, "b")
	if err := e.Pods.StopContainer(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	all, err := e.Pods.AllContainerStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d containers, want 2", len(all))
	}
	calls := statsCalls(e)
	want := "Stats " + lifecycle.DomainPrefix + a
	if len(calls) != 1 || calls[0] != want {
		t.Fatalf("libvirt stats calls %q, want [%q]", calls, want)
	}
	for _, cs := range all {
		if cs.ID == a && (!cs.Running || cs.CPUTimeNs != 1e9) {
			t.Errorf("running VM: %+v", cs)
		}
		if cs.ID == b && (cs.Running || cs.CPUTimeNs != 0 || cs.WorkingSetBytes != 0) {
			t.Errorf("stopped VM has usage: %+v", cs)
		}
	}
}

// TestStatsServedFromSamples: calls within stats_interval of the last
// round make no libvirt call and carry the sample's time; once the round
// is stats_interval old a call samples again itself (two calls a second
// apart, as crictl stats makes them, never get the same figures), and each
// figure carries its own sample time.
func TestStatsServedFromSamples(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, id := startVM(t, e, "a")
	t0 := e.Clock.Now()
	if _, err := e.Pods.AllSandboxStats(ctx); err != nil {
		t.Fatal(err)
	}
	e.Clock.Set(t0.Add(999 * time.Millisecond)) // under the 1s default interval
	for i := 0; i < 5; i++ {
		cs, err := e.Pods.ContainerStats(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !cs.Running || cs.Timestamp != t0.UnixNano() || cs.DiskTimestamp != t0.UnixNano() {
			t.Fatalf("stats %+v, want the sample of %v", cs, t0)
		}
	}
	ps, err := e.Pods.SandboxStats(ctx, sbID)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Timestamp != t0.UnixNano() || ps.CPUTimeNs != 1e9 || len(ps.Containers) != 1 || ps.WorkingSetBytes != ps.Containers[0].WorkingSetBytes {
		t.Errorf("pod stats %+v: want its container's sums at %v", ps, t0)
	}
	if len(ps.Network) == 0 || ps.NetworkTimestamp != t0.UnixNano() {
		t.Errorf("pod network %+v at %d, want the counters sampled at %v", ps.Network, ps.NetworkTimestamp, t0)
	}
	if n := len(statsCalls(e)); n != 1 {
		t.Fatalf("%d libvirt stats calls, want 1", n)
	}
	t1 := t0.Add(time.Second)
	e.Clock.Set(t1)
	cs, err := e.Pods.ContainerStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(statsCalls(e)); n != 2 || cs.Timestamp != t1.UnixNano() {
		t.Errorf("a stats_interval later: %d calls, timestamp %d; want a new round at %v", n, cs.Timestamp, t1)
	}
}

// TestStatsBusyDomain: a domain libvirt skips (busy, NOWAIT) keeps its
// last sample and its time; once that is older than stats_max_age the VM
// is reported without usage rather than with stale figures.
func TestStatsBusyDomain(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, id := startVM(t, e, "a")
	t0 := e.Clock.Now()
	if _, err := e.Pods.ContainerStats(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.LV.SetBusy(lifecycle.DomainPrefix+id, true)
	e.Clock.Set(t0.Add(3 * time.Second))
	e.Pods.SampleStats(ctx) // the loop's round
	cs, err := e.Pods.ContainerStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Running || cs.Timestamp != t0.UnixNano() || cs.CPUTimeNs != 1e9 {
		t.Errorf("busy domain: %+v, want the sample of %v", cs, t0)
	}
	e.Clock.Set(t0.Add(7 * time.Second))
	cs, err = e.Pods.ContainerStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Running || cs.CPUTimeNs != 0 {
		t.Errorf("sample older than stats_max_age reported: %+v", cs)
	}
	e.LV.SetBusy(lifecycle.DomainPrefix+id, false)
	e.Pods.SampleStats(ctx)
	if cs, _ := e.Pods.ContainerStats(ctx, id); !cs.Running || cs.Timestamp != t0.Add(7*time.Second).UnixNano() {
		t.Errorf("after the job: %+v", cs)
	}
}

// TestStatsLoop: CollectStats samples once per stats_interval on its own,
// and a libvirt failure keeps the last samples.
func TestStatsLoop(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	_, id := startVM(t, e, "a")
	ctx, cancel := context.WithCancel(lifecycletest.Ctx(t))
	done := make(chan struct{})
	go func() { e.Pods.CollectStats(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(statsCalls(e)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rounds in 10 s with stats_interval %s", len(statsCalls(e)), time.Duration(e.Cfg.StatsInterval))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	e.LV.FailNext("Stats", errors.New("injected"))
	e.Pods.SampleStats(context.Background())
	if cs, err := e.Pods.ContainerStats(context.Background(), id); err != nil || !cs.Running || cs.CPUTimeNs != 1e9 {
		t.Errorf("after a failed round: %+v, %v", cs, err)
	}
}

// TestStatsCallWaitIsBounded: a stats call whose round is slow (libvirtd
// busy starting VMs) answers from the last samples after StatsWait rather
// than wait for it; the round goes on for the calls after, and calls
// meanwhile start no second one.
func TestStatsCallWaitIsBounded(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	e.StatsWait = 50 * time.Millisecond
	e.Pods = e.NewPods()
	ctx := lifecycletest.Ctx(t)
	_, id := startVM(t, e, "a")
	t0 := e.Clock.Now()
	if _, err := e.Pods.ContainerStats(ctx, id); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Second)
	e.Clock.Set(t1) // the round is stats_interval old
	release := e.LV.Hang("Stats")
	defer release()
	for i := 0; i < 3; i++ {
		start := time.Now()
		cs, err := e.Pods.ContainerStats(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("call %d waited %v for a hung round", i, took)
		}
		if !cs.Running || cs.Timestamp != t0.UnixNano() {
			t.Fatalf("call %d: %+v, want the last sample, of %v", i, cs, t0)
		}
	}
	if n := e.LV.Waiting("Stats"); n != 1 {
		t.Fatalf("%d rounds waiting for libvirt, want 1", n)
	}
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs, err := e.Pods.ContainerStats(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if cs.Timestamp == t1.UnixNano() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the round was released: %+v, want the sample of %v", cs, t1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(statsCalls(e)); n != 2 {
		t.Errorf("%d libvirt stats calls, want 2", n)
	}
}

// TestStatsSlowLoopRoundNoWait: while the loop's round, started within
// stats_interval, is under way (rounds slower than stats_interval with
// many VMs), a call answers from the last samples at once, even with an
// unbounded wait.
func TestStatsSlowLoopRoundNoWait(t *testing.T) {
	e := lifecycletest.NewEnv(t) // StatsWait a minute
	ctx := lifecycletest.Ctx(t)
	_, id := startVM(t, e, "a")
	t0 := e.Clock.Now()
	if _, err := e.Pods.ContainerStats(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.Clock.Set(t0.Add(time.Second))
	release := e.LV.Hang("Stats")
	defer release()
	round := make(chan struct{})
	go func() { e.Pods.SampleStats(ctx); close(round) }() // the loop's round, slow
	for e.LV.Waiting("Stats") < 1 {
		time.Sleep(time.Millisecond)
	}
	e.Clock.Set(t0.Add(1500 * time.Millisecond)) // the last finished round is 1.5 s old
	start := time.Now()
	cs, err := e.Pods.ContainerStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second || cs.Timestamp != t0.UnixNano() {
		t.Fatalf("call during a slow round: %+v after %v; want the sample of %v at once", cs, took, t0)
	}
	release()
	<-round
	if cs, _ := e.Pods.ContainerStats(ctx, id); cs.Timestamp <= t0.UnixNano() {
		t.Errorf("after the round: sample of %v, want the round's, newer than %v", time.Unix(0, cs.Timestamp), t0)
	}
}
