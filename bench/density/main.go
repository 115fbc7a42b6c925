// Command density runs -pods small VM pods through one vmpod (issue 17,
// item 5: "100 pods") and reports what that costs: the time until all are
// ready, the p50/p99 of every CRI call the kubelet makes (RunPodSandbox,
// CreateContainer, StartContainer, the list, status and stats calls,
// ExecSync) while the pods boot and once they idle, vmpod's and libvirtd's
// RSS and file descriptors and the QEMU processes' RSS and PSS at every
// -wave pods, and from the least-squares slopes of those an estimate for
// -estimate pods. Target (issue 17, item 2): ListContainerStats and
// ListPodSandboxStats p99 under 50 ms at 100 VMs.
//
// The guests idle cheaply: -memory of guest RAM (the test guest's busybox
// initramfs needs more than 64 MiB: with 64 it prints nothing), a -tb-cache MiB TCG translation cache, and a
// Linux guest that halts its vCPU when idle (the kernel's default idle
// loop, tickless). Pods start in waves of -wave at once, the next wave once
// every pod of the last one printed its ready line, so that each memory and
// latency figure belongs to a known number of running VMs and 2 emulating
// cores never boot more than -wave guests at a time (100 at once would
// measure mostly the CPU queue, and push boots past every timeout). A pod
// is ready when "vmpod-test-guest ready" is in its CRI log (the guest
// prints it after its agent started). After each wave the load loops run
// -settle longer with the pods idle; those calls make the "idle" figures.
//
// The benchmark stops starting pods, and says so, when MemAvailable would
// fall under -min-available. Every pod is stopped and removed at the end,
// also after an error or SIGINT/SIGTERM.
//
// Usage (root, libvirtd running, vmpod and the test guest built):
//
//	go run ./bench/density -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2 -md /tmp/density.md
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

type options struct {
	vmpodBin, guest, md string
	pods, wave          int
	memory              string
	tbCache             int
	estimate            int
	interval, execEvery time.Duration
	settle              time.Duration
	waveTimeout         time.Duration
	minAvailMiB         int
}

func main() {
	var o options
	flag.StringVar(&o.vmpodBin, "vmpod", "bin/vmpod", "vmpod binary")
	flag.StringVar(&o.guest, "guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "test guest image")
	flag.StringVar(&o.md, "md", "", "write the docs/benchmarks.md section to this file")
	flag.IntVar(&o.pods, "pods", 100, "pods to run")
	flag.IntVar(&o.wave, "wave", 25, "pods started at once; resources are sampled after each wave")
	flag.StringVar(&o.memory, "memory", "96Mi", "guest RAM (vmpod.dev/memory); 64Mi does not boot the test guest")
	flag.IntVar(&o.tbCache, "tb-cache", 16, "TCG translation cache per VM, MiB (tcg_tb_cache_mib)")
	flag.IntVar(&o.estimate, "estimate", 400, "pod count to extrapolate to")
	flag.DurationVar(&o.interval, "interval", 100*time.Millisecond, "pause between two calls of each list, status and stats loop")
	flag.DurationVar(&o.execEvery, "exec-interval", 500*time.Millisecond, "pause between two ExecSync calls")
	flag.DurationVar(&o.settle, "settle", 15*time.Second, "load loops with the pods idle after each wave")
	flag.DurationVar(&o.waveTimeout, "wave-timeout", 10*time.Minute, "longest wait for a wave's pods to be ready")
	flag.IntVar(&o.minAvailMiB, "min-available", 3072, "MiB of MemAvailable below which no more pods are started")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP,
		// A closed stdout (`| head`) must not kill the run before it removed its pods.
		syscall.SIGPIPE)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/density:", err)
		os.Exit(1)
	}
}

// bench is one run: a vmpod with the guest pulled, the pods started so
// far and the calls timed.
type bench struct {
	o     options
	v     *measure.Vmpod
	g     *measure.Guest
	logs  string
	calls *calls

	mu    sync.Mutex
	pods  []*pod
	ready []*pod // ready, in the order they got there
}

// pod is one pod of the benchmark.
type pod struct {
	name         string
	podID, ctrID string
	log          string
	startedAt    time.Time // before RunPodSandbox
	readyAt      time.Time
	err          error
}

func run(ctx context.Context, o options) (retErr error) {
	wall := time.Now()
	if o.wave < 1 || o.pods < 1 {
		return errors.New("-pods and -wave must be at least 1")
	}
	work, err := os.MkdirTemp("", "vmpod-bench-density-")
	if err != nil {
		return err
	}
	os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	// A /16 holds 65534 addresses: IP exhaustion is not what this measures.
	confDir, cleanupNet, err := measure.BridgeCNI(work, "vmpod-bench-density", "vmpoddens0", "10.246.0.0/16")
	if err != nil {
		return err
	}
	defer cleanupNet()
	v, err := measure.StartVmpod(o.vmpodBin, work, "VMPOD_ACCELERATOR=tcg", fmt.Sprintf("VMPOD_TCG_TB_CACHE_MIB=%d", o.tbCache),
		"VMPOD_CNI_CONF_DIR="+confDir, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/images.d")
	if err != nil {
		return err
	}
	defer v.Close()
	g, err := measure.PullGuest(v, o.guest)
	if err != nil {
		return err
	}
	defer g.Close()
	b := &bench{o: o, v: v, g: g, logs: filepath.Join(work, "logs"), calls: newCalls()}
	defer func() {
		if err := b.teardown(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	rep, err := b.measure(ctx)
	if err != nil {
		return err
	}
	rep.wall = time.Since(wall)
	if err := rep.write(b, o.md); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted (report written): %w", err)
	}
	return nil
}

// measure starts the pods wave by wave with the load loops running and
// samples the processes at 0 pods and after each wave.
func (b *bench) measure(ctx context.Context) (*report, error) {
	rep := &report{}
	s, err := b.sample(0)
	if err != nil {
		return nil, err
	}
	rep.samples = append(rep.samples, s)

	loadCtx, stopLoad := context.WithCancel(ctx)
	loops := b.startLoad(loadCtx)
	defer func() { stopLoad(); loops.Wait() }()
	b.calls.setPhase(0, false)
	cpu0 := b.cpu()
	sleep(ctx, b.o.settle)
	rep.samples[0].cpu = b.cpu().since(cpu0)
	fmt.Println(rep.samples[0])

	t0 := time.Now()
	minAvail := b.o.minAvailMiB << 10
	for started := 0; started < b.o.pods && ctx.Err() == nil; {
		n := min(b.o.wave, b.o.pods-started)
		// Fit the wave in memory from what each pod took so far.
		if last := rep.samples[len(rep.samples)-1]; last.pods > 0 {
			perPod := (rep.samples[0].memAvail - last.memAvail) / last.pods
			if perPod > 0 {
				n = min(n, (last.memAvail-minAvail)/perPod)
			}
		}
		if avail := memAvailable(); n <= 0 || avail < minAvail {
			rep.stopped = fmt.Sprintf("stopped at %d pods: MemAvailable %d MiB, under %d MiB after the next pods", started, avail>>10, b.o.minAvailMiB)
			fmt.Println(rep.stopped)
			break
		}
		b.calls.setPhase(started+n, true)
		w := b.wave(ctx, started, n)
		rep.waves = append(rep.waves, w)
		started += n
		fmt.Printf("wave %d: %d pods started, %d ready, last %.1f s after its first RunPodSandbox\n", len(rep.waves), n, w.ready, w.took.Seconds())
		if w.ready < n {
			rep.failed = append(rep.failed, fmt.Sprintf("wave %d: %d of %d pods not ready, the first: %v", len(rep.waves), n-w.ready, n, w.firstErr))
			fmt.Println(rep.failed[len(rep.failed)-1])
		}
		if w.ready == 0 {
			rep.stopped = fmt.Sprintf("stopped after wave %d: none of its pods got ready", len(rep.waves))
			fmt.Println(rep.stopped)
			break
		}
		rep.allReady = time.Since(t0)
		// The samples count the pods that are up.
		b.mu.Lock()
		up := len(b.ready)
		b.mu.Unlock()
		b.calls.setPhase(up, false)
		cpu0 := b.cpu()
		sleep(ctx, b.o.settle)
		s, err := b.sample(up)
		if err != nil {
			return nil, err
		}
		s.cpu = b.cpu().since(cpu0)
		rep.samples = append(rep.samples, s)
		fmt.Println(s)
		if s.memAvail < minAvail {
			rep.stopped = fmt.Sprintf("stopped at %d pods: MemAvailable %d MiB, under %d MiB", up, s.memAvail>>10, b.o.minAvailMiB)
			fmt.Println(rep.stopped)
			break
		}
	}
	if ctx.Err() != nil {
		b.mu.Lock()
		rep.stopped = fmt.Sprintf("interrupted with %d pods started, %d ready; the figures are those measured until then", len(b.pods), len(b.ready))
		b.mu.Unlock()
	}
	return rep, nil
}

// waveResult is one wave of pods started at once.
type waveResult struct {
	pods, ready int
	took        time.Duration // first RunPodSandbox to the last ready line
	firstErr    error
}

// wave starts n pods at once and waits until each is ready or failed.
func (b *bench) wave(ctx context.Context, first, n int) waveResult {
	ctx, cancel := context.WithTimeout(ctx, b.o.waveTimeout)
	defer cancel()
	t0 := time.Now()
	ps := make([]*pod, n)
	var wg sync.WaitGroup
	for i := range n {
		p := &pod{name: fmt.Sprintf("density-%d", first+i)}
		p.log = filepath.Join(b.logs, p.name, "vm.log")
		ps[i] = p
		b.mu.Lock()
		b.pods = append(b.pods, p)
		b.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.err = b.boot(ctx, p)
			if p.err == nil {
				b.mu.Lock()
				b.ready = append(b.ready, p)
				b.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	w := waveResult{pods: n}
	for _, p := range ps {
		if p.err != nil {
			if w.firstErr == nil {
				w.firstErr = fmt.Errorf("%s: %w", p.name, p.err)
				if log, err := os.ReadFile(p.log); err == nil {
					fmt.Printf("end of %s's CRI log:\n%s\n", p.name, log[max(0, len(log)-1500):])
				}
			}
			continue
		}
		w.ready++
		w.took = max(w.took, p.readyAt.Sub(t0))
	}
	return w
}

func (b *bench) podConfig(p *pod) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.name, Namespace: "bench", Uid: "uid-" + p.name},
		LogDirectory: filepath.Dir(p.log),
		Annotations:  map[string]string{"vmpod.dev/memory": b.o.memory},
	}
}

// boot runs p's sandbox, creates and starts its VM, timing each call, and
// waits for the ready line in its CRI log.
func (b *bench) boot(ctx context.Context, p *pod) error {
	if err := os.MkdirAll(filepath.Dir(p.log), 0o755); err != nil {
		return err
	}
	cfg := b.podConfig(p)
	p.startedAt = time.Now()
	var sb *runtimeapi.RunPodSandboxResponse
	err := b.calls.time("RunPodSandbox", func() (err error) {
		sb, err = b.g.RT.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		return err
	})
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w", err)
	}
	b.mu.Lock()
	p.podID = sb.PodSandboxId
	b.mu.Unlock()
	var c *runtimeapi.CreateContainerResponse
	err = b.calls.time("CreateContainer", func() (err error) {
		c, err = b.g.RT.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "vm"}, Image: &runtimeapi.ImageSpec{Image: b.g.ImageID}, LogPath: "vm.log"}})
		return err
	})
	if err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	b.mu.Lock()
	p.ctrID = c.ContainerId
	b.mu.Unlock()
	err = b.calls.time("StartContainer", func() error {
		_, err := b.g.RT.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
		return err
	})
	if err != nil {
		return fmt.Errorf("StartContainer: %w", err)
	}
	return waitReady(ctx, p)
}

// readyLine is what the test guest prints on ttyS0 once booted, after its
// guest agent started.
const readyLine = "vmpod-test-guest ready"

// waitReady polls p's CRI log for the ready line every 100 ms (a pod's
// boot takes tens of seconds here).
func waitReady(ctx context.Context, p *pod) error {
	var r criLogReader
	for {
		if r.ready(p.log) {
			p.readyAt = time.Now()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %q in %s: %w", readyLine, p.log, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// criLogReader finds the ready line in a CRI log file as it grows. The
// file holds "TIMESTAMP STREAM TAG TEXT" lines, and vmpod writes a console
// line that waits too long for its end as P (partial) lines, the last part
// an F line: a guest starved of CPU prints "v" and "mpod-test-guest
// ready" seconds apart. So the reader joins the parts of each line.
type criLogReader struct {
	off  int64
	raw  []byte // a file line not complete yet
	line string // the parts of a console line so far
}

func (r *criLogReader) ready(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(r.off, 0); err != nil {
		return false
	}
	buf := make([]byte, 64<<10)
	for {
		n, _ := f.Read(buf)
		if n == 0 {
			return false
		}
		r.off += int64(n)
		r.raw = append(r.raw, buf[:n]...)
		for {
			i := bytes.IndexByte(r.raw, '\n')
			if i < 0 {
				break
			}
			if r.feed(string(r.raw[:i])) {
				return true
			}
			r.raw = r.raw[i+1:]
		}
	}
}

// feed takes one line of the file and reports whether the console line it
// completes or continues holds the ready line.
func (r *criLogReader) feed(fileLine string) bool {
	f := strings.SplitN(fileLine, " ", 4)
	if len(f) < 3 {
		return false
	}
	if len(f) == 4 {
		r.line += f[3]
	}
	found := strings.Contains(r.line, readyLine)
	if f[2] != "P" {
		r.line = ""
	}
	return found
}

// teardown stops and removes every pod, eight at a time, and checks that
// none of their domains is left.
func (b *bench) teardown() error {
	b.mu.Lock()
	ps := append([]*pod(nil), b.pods...)
	b.mu.Unlock()
	t := time.Now()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, p := range ps {
		if p.podID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// Retried for a while: libvirtd may be restarting (the machine's
			// other users' tests restart it).
			var err error
			for end := time.Now().Add(3 * time.Minute); ; {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				_, err = b.g.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.podID})
				if err == nil {
					_, err = b.g.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.podID})
				}
				cancel()
				if err == nil || time.Now().After(end) {
					break
				}
				time.Sleep(2 * time.Second)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("remove %s: %w", p.name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("teardown: %d pods stopped and removed in %.1f s, %d errors\n", len(ps), time.Since(t).Seconds(), len(errs))
	// Whatever vmpod left of ours goes with virsh.
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").Output()
	for _, d := range strings.Fields(string(out)) {
		for _, p := range ps {
			if p.ctrID != "" && d == "vmpod-"+p.ctrID {
				errs = append(errs, fmt.Errorf("domain %s left after RemovePodSandbox", d))
				exec.Command("virsh", "-c", "qemu:///system", "destroy", d).Run()
				exec.Command("virsh", "-c", "qemu:///system", "undefine", "--nvram", d).Run()
			}
		}
	}
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
