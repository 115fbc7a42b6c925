// Command warmstart benchmarks warm start (docs/snapshots.md#warm-start)
// against a cold boot of the same guest through the same vmpod,
// interleaved.
//
// It starts a vmpod (TCG) on a private CNI bridge, boots one pod
// annotated vmpod.dev/warm-start: "true" and waits until its template is
// saved, then alternates -runs cold pods (vmpod.dev/warm-start: "false")
// and -runs warm pods (the annotation "true": a restore of the template),
// the order swapped every run. A pod is ready when an ExecSync of `true`
// returns 0, the guest agent answering (a warm pod does not boot, so it
// prints no ready line); the time is from RunPodSandbox to that answer.
// Each pod is removed before the next. It prints medians and spreads,
// the ratio warm/cold and whether the target (under a third) is met.
// This is the boot benchmark's warm start part, in its own program
// because its readiness differs from bench/boot's (the guest's ready
// line on its console).
//
// Usage (root, libvirtd running, vmpod and the guest image built):
//
//	go run ./bench/warmstart -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2 [-md FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

func main() {
	vmpodBin := flag.String("vmpod", "bin/vmpod", "vmpod binary")
	guestImg := flag.String("guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "test guest image")
	runs := flag.Int("runs", 5, "timed pods of each kind")
	md := flag.String("md", "", "write the docs/benchmarks.md section here")
	flag.Parse()
	work, err := os.MkdirTemp("", "vmpod-bench-warm-")
	check(err)
	os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	confDir, cleanup, err := measure.BridgeCNI(work, "vmpod-bench-warm", "vmpodbench5", "10.251.0.0/16")
	check(err)
	defer cleanup()
	onFatal = append(onFatal, cleanup, func() { os.RemoveAll(work) })
	v, err := measure.StartVmpod(*vmpodBin, work, "VMPOD_ACCELERATOR=tcg", "VMPOD_TCG_TB_CACHE_MIB=256",
		"VMPOD_CNI_CONF_DIR="+confDir, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/images.d")
	check(err)
	defer v.Close()
	onFatal = append(onFatal, v.Close)
	g, err := measure.PullGuest(v, *guestImg)
	check(err)
	defer g.Close()
	b := &bench{rt: g.RT, image: g.ImageID, work: work}
	onFatal = append(onFatal, func() {
		ctx := context.Background()
		if r, err := g.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range r.Items {
				g.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				g.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
	})

	// The template.
	t0 := time.Now()
	first, _ := b.pod("template", true)
	var tmpl []string
	for len(tmpl) == 0 {
		tmpl, _ = filepath.Glob(filepath.Join(v.Dir, "state", "templates", "*", "*", "meta.json"))
		if time.Since(t0) > 10*time.Minute {
			check(fmt.Errorf("no template 10 minutes after the first pod started"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("template saved %.1f s after the first RunPodSandbox\n", time.Since(t0).Seconds())
	b.remove(first)

	var cold, warm, warmCreate, warmStart []time.Duration
	for i := 0; i < *runs; i++ {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, w := range order {
			id, r := b.pod(fmt.Sprintf("run%d-%v", i, w), w)
			if w {
				warm, warmCreate, warmStart = append(warm, r.ready), append(warmCreate, r.create), append(warmStart, r.start)
			} else {
				cold = append(cold, r.ready)
			}
			fmt.Printf("run %d %s: ready %.2f s (create %.0f ms, start %.0f ms)\n", i, kind(w), r.ready.Seconds(), ms(r.create), ms(r.start))
			b.remove(id)
		}
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	mc, mw := measure.Median(cold), measure.Median(warm)
	ratio := mw.Seconds() / mc.Seconds()
	verdict := "met"
	if ratio >= 1.0/3 {
		verdict = "**not met**"
	}
	fmt.Printf("== cold %s, warm %s, ratio %.3f (target < 0.333: %s)\n", measure.Spread(cold, secs), measure.Spread(warm, secs), ratio, verdict)
	sec := measure.NewSection("warmstart", *vmpodBin, *runs)
	sec.Printf("The test guest (TCG, vmpod's default memory) through one vmpod: a template saved from a first pod annotated `vmpod.dev/warm-start: \"true\"`, then %d cold pods (the annotation `\"false\"`) and %d warm pods alternating. Ready = the first ExecSync of `true` answered, from RunPodSandbox. Load average after the run: %s.\n\n", *runs, *runs, measure.LoadAvg())
	sec.Table([]string{"", "median (spread)"}, [][]string{
		{"cold boot to ready", measure.Spread(cold, secs)},
		{"warm start to ready", measure.Spread(warm, secs)},
		{"warm: CreateContainer (copy the template, seed, define)", measure.Spread(warmCreate, func(d time.Duration) string { return fmt.Sprintf("%.0f ms", ms(d)) })},
		{"warm: StartContainer (restore, network, resume)", measure.Spread(warmStart, func(d time.Duration) string { return fmt.Sprintf("%.0f ms", ms(d)) })},
		{"ratio warm / cold (medians)", fmt.Sprintf("%.3f (target < 0.333: %s)", ratio, verdict)},
	})
	check(sec.Write(*md))
}

type bench struct {
	rt    runtimeapi.RuntimeServiceClient
	image string
	work  string
}

type result struct{ create, start, ready time.Duration }

// pod runs a pod with warm start on or off and waits until it is ready.
func (b *bench) pod(name string, warm bool) (string, result) {
	ctx := context.Background()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: "uid-" + name},
		LogDirectory: filepath.Join(b.work, "logs", name),
		Annotations:  map[string]string{"vmpod.dev/warm-start": fmt.Sprint(warm)},
	}
	t0 := time.Now()
	sb, err := b.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	check(err)
	t1 := time.Now()
	c, err := b.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "vm"}, Image: &runtimeapi.ImageSpec{Image: b.image}, LogPath: "vm.log"}})
	check(err)
	t2 := time.Now()
	_, err = b.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
	check(err)
	t3 := time.Now()
	for {
		r, err := b.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"true"}, Timeout: 300})
		if err == nil && r.ExitCode == 0 {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			check(fmt.Errorf("pod %s not ready in 10 minutes: %v", name, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return sb.PodSandboxId, result{create: t2.Sub(t1), start: t3.Sub(t2), ready: time.Since(t0)}
}

func (b *bench) remove(podID string) {
	ctx := context.Background()
	_, err := b.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
	check(err)
	_, err = b.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
	check(err)
}

func kind(warm bool) string {
	if warm {
		return "warm"
	}
	return "cold"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// onFatal undoes what the run made (its pods, vmpod, the network) when
// it fails: check exits, so deferred calls would not run.
var onFatal []func()

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/warmstart:", err)
		for i := len(onFatal) - 1; i >= 0; i-- {
			onFatal[i]()
		}
		os.Exit(1)
	}
}
