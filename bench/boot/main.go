// Command boot benchmarks how long a pod's VM takes to boot through vmpod
// against starting the very same libvirt domain directly, and how vmpod
// behaves while many pods boot at once.
//
// It serves the test guest from an in-process HTTP server on 127.0.0.1,
// starts one vmpod (TCG, private socket and state directory, and a CNI
// config of its own: a bridge on 10.249.0.0/16 that exists only on this
// machine) and pulls the guest once. Then, in the same run:
//
//  1. vmpod path: RunPodSandbox + CreateContainer + StartContainer over the
//     CRI gRPC socket, timed until the line "vmpod-test-guest ready" is in
//     the container's CRI log file (inotify on the log directory, with a
//     fallback re-read every -poll); then StopPodSandbox + RemovePodSandbox.
//  2. direct baseline, interleaved with 1 (the order rotates every run,
//     so both see the same machine): vmpod's own domain XML (the inactive
//     definition of the first vmpod domain, renamed vmpodbench-<tag>-<n>,
//     without UUID and vmpod metadata, with a fresh overlay, its own
//     sockets and serial log, a copy of the pod's cloud-init seed, its
//     guest agent channel, and its NIC on a tap the benchmark makes on a
//     bridge of its own), timed over tap + qemu-img create +
//     virDomainDefineXML + virDomainCreate through the libvirt Go API +
//     reading the serial socket until the ready line; then destroy,
//     undefine, tap removed. With -variants, variants of that domain
//     (a device added or changed) boot in the same rotation, to measure
//     what the device costs.
//  3. concurrency: -pods pods booted at once in goroutines while
//     ListPodSandbox (and, for information, ListContainers) are called every
//     -list-interval, with Version in the same loop as a control (it reads
//     no vmpod state, so its latency is the loaded machine's, not vmpod's);
//     with -log-level debug also vmpod's own logged handler times; then
//     vmpod's and the QEMU processes' RSS with the VMs up, and a concurrent
//     teardown checked to leave nothing behind.
//
// It prints every run, the medians, the difference and ratio vmpod/direct
// (targets: under 150 ms and under 10%), the ListPodSandbox latencies
// (target: p99 under 20 ms) and vmpod's RSS (target: under 60 MiB). A
// benchmark reports: it never fails because targets are missed.
//
// libvirtd is shared, so the benchmark only touches domains it created
// (vmpod's start-up recovery removes only its own instance's domains).
//
// Usage (root, libvirtd running, vmpod built, guest image built):
//
//	go build -o bin/vmpod ./cmd/vmpod
//	go run ./bench/boot -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2 -runs 10 -md /tmp/boot.md
//
// With -md it writes its section of docs/benchmarks.md (bench/run pastes
// it between <!-- bench:boot --> and <!-- /bench:boot -->).
package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

type options struct {
	vmpod        string
	guest        string
	uri          string
	runs         int
	warmup       int
	pods         int
	bootTimeout  time.Duration
	concTimeout  time.Duration
	listInterval time.Duration
	poll         time.Duration
	foreignWait  time.Duration
	tbCacheMiB   int
	logLevel     string
	keep         bool
	md           string
	variants     []string
}

// Targets from the issue.
const (
	targetDiff    = 150 * time.Millisecond
	targetRatio   = 1.10
	targetListP99 = 20 * time.Millisecond
	targetRSSKiB  = 60 << 10
)

func main() {
	var o options
	flag.StringVar(&o.vmpod, "vmpod", "./bin/vmpod", "vmpod binary")
	flag.StringVar(&o.guest, "guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "guest image (tests/e2e/images/build-guest.sh builds it)")
	flag.StringVar(&o.uri, "libvirt-uri", "qemu:///system", "libvirt URI for vmpod and virsh")
	flag.IntVar(&o.runs, "runs", 10, "timed boots of each path (vmpod, direct)")
	flag.IntVar(&o.warmup, "warmup", 1, "untimed boots of each path first (caches, QEMU binary)")
	flag.IntVar(&o.pods, "pods", 10, "pods booted concurrently (0 skips the concurrency phase)")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 3*time.Minute, "limit for one sequential boot")
	flag.DurationVar(&o.concTimeout, "concurrent-timeout", 5*time.Minute, "limit for all concurrent pods to be ready")
	flag.DurationVar(&o.listInterval, "list-interval", 20*time.Millisecond, "ListPodSandbox period during the concurrency phase")
	flag.DurationVar(&o.poll, "poll", 15*time.Millisecond, "fallback re-read of the CRI log (inotify wakes the wait sooner)")
	flag.DurationVar(&o.foreignWait, "foreign-wait", 0, "how long to wait for other vmpod-* domains to go before starting vmpod (they are safe from it; this is for a quieter machine)")
	flag.IntVar(&o.tbCacheMiB, "tb-cache-mib", 0, "VMPOD_TCG_TB_CACHE_MIB for vmpod (0: vmpod's default)")
	flag.StringVar(&o.logLevel, "log-level", "info", "vmpod log level")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (vmpod log, pod logs)")
	flag.StringVar(&o.md, "md", "", "write the benchmark's section of docs/benchmarks.md to this file")
	vs := flag.String("variants", "", "comma-separated baseline variants also booted in every run, to measure what a device costs (a+b applies both): "+variantNames())
	flag.Parse()
	for _, v := range strings.Split(*vs, ",") {
		if v == "" {
			continue
		}
		for _, one := range strings.Split(v, "+") {
			if _, ok := variants[one]; !ok {
				fmt.Fprintf(os.Stderr, "boot bench: unknown variant %q (%s; join several with +)\n", one, variantNames())
				os.Exit(2)
			}
		}
		o.variants = append(o.variants, v)
	}
	if o.runs < 1 || o.pods < 0 || o.warmup < 0 {
		fmt.Fprintln(os.Stderr, "boot bench: -runs must be at least 1, -pods and -warmup at least 0")
		os.Exit(2)
	}
	for _, p := range []*string{&o.vmpod, &o.guest} {
		abs, err := filepath.Abs(*p)
		if err == nil {
			*p = abs
		}
	}
	if _, err := os.Stat(o.guest); err != nil {
		fmt.Fprintf(os.Stderr, "boot bench: guest image: %v (build it with tests/e2e/images/build-guest.sh)\n", err)
		os.Exit(1)
	}
	if _, err := os.Stat(o.vmpod); err != nil {
		fmt.Fprintf(os.Stderr, "boot bench: vmpod binary: %v (go build -o bin/vmpod ./cmd/vmpod)\n", err)
		os.Exit(1)
	}

	// The section's first line has the load before the run.
	sec := measure.NewSection("boot", o.vmpod, o.runs)
	var tag [3]byte
	rand.Read(tag[:])
	b := &bench{opts: o, tag: hex.EncodeToString(tag[:]), vmpodDomains: map[string]bool{}, directDomains: map[string]bool{}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nboot bench: %v: cleaning up\n", s)
		b.abort(130)
	}()

	fmt.Printf("boot benchmark: %d CPUs, load %s, tag %s, guest %s\n", runtime.NumCPU(), measure.LoadAvg(), b.tag, o.guest)
	if names, err := b.virshNames(); err == nil {
		fmt.Printf("libvirt domains at start (not ours, left alone): %d\n", len(names))
	}
	b.setup()
	b.waitNoForeignVmpodDomains()
	b.startVmpod()
	pullTime := b.pull()
	idle, _ := measure.ReadProc(b.vmpod.Pid())
	fmt.Printf("vmpod pid %d up; pulled %s in %s (%s); vmpod idle RSS %s, %d fds, %d threads\n",
		b.vmpod.Pid(), imageName, ms(pullTime), b.imgPath, mib(idle.RSS), idle.FDs, idle.Threads)

	seq := b.sequential()
	after, _ := measure.ReadProc(b.vmpod.Pid())
	if left := b.leftoverFiles(); len(left) > 0 {
		b.problem("after the sequential runs (all pods removed), files are left: %v", left)
	}
	if names, err := b.virshNames(); err == nil {
		b.mu.Lock()
		for _, n := range names {
			if b.vmpodDomains[n] {
				b.problems = append(b.problems, fmt.Sprintf("after the sequential runs, domain %s of a removed pod still exists", n))
			}
		}
		b.mu.Unlock()
	}
	if after.FDs > idle.FDs+o.runs/2 {
		b.problem("vmpod's open files grew from %d to %d over %d boots with every pod removed (descriptor leak?)", idle.FDs, after.FDs, o.runs+o.warmup)
	}

	var conc *concResult
	if o.pods > 0 {
		fmt.Printf("\n--- concurrency: %d pods at once, ListPodSandbox every %v ---\n", o.pods, o.listInterval)
		conc = b.concurrent(o.pods)
		printConcurrent(conc)
	}
	final, _ := measure.ReadProc(b.vmpod.Pid())
	endLoad := measure.LoadAvg()
	b.cleanup()

	printSummary(b, seq, conc, idle, after, final, endLoad)
	writeSection(sec, b, seq, conc, endLoad)
	if err := sec.Write(o.md); err != nil {
		fmt.Fprintf(os.Stderr, "boot bench: %v\n", err)
		os.Exit(1)
	}
}

// seqResult is the interleaved sequential runs.
type seqResult struct {
	vmpod    []*podBoot
	stop     []time.Duration
	remove   []time.Duration
	direct   []directRun
	pairs    []time.Duration // vmpod - direct, per run where both succeeded
	variants map[string][]directRun
	vpairs   map[string][]time.Duration // variant - direct, per run
	failed   int
}

func (b *bench) sequential() *seqResult {
	o := b.opts
	r := &seqResult{variants: map[string][]directRun{}, vpairs: map[string][]time.Duration{}}
	var bl *baseline
	n := 0
	bootVmpod := func() (*podBoot, time.Duration, time.Duration) {
		n++
		name := fmt.Sprintf("boot-%d", n)
		w, err := newLogWatcher(b.crilogPath(name), o.poll)
		if err != nil {
			b.fatalf("%v", err)
		}
		defer w.close()
		t0 := time.Now()
		p := b.bootPod(name, w, t0, t0.Add(o.bootTimeout))
		if p.err == nil && bl == nil {
			if bl, err = b.captureBaseline(p.ctrID); err != nil {
				b.fatalf("take vmpod's domain XML for the baseline: %v", err)
			}
			// Kept with -keep, for a look at what the baseline boots.
			os.WriteFile(filepath.Join(b.work, "vmpod-domain.xml"), []byte(bl.xml), 0o644)
			fmt.Printf("baseline XML: inactive definition of %s (%d bytes), renamed vmpodbench-%s-<n>, uuid and vmpod metadata removed, its NIC on a tap on bridge %s, disk/socket/log paths replaced\n",
				bl.name, len(bl.xml), b.tag, b.bridgeName())
		}
		var stop, rm time.Duration
		if p.podID != "" {
			var err error
			if stop, rm, err = b.removePod(p.podID); err != nil {
				b.problem("remove pod %s: %v", name, err)
			}
		}
		return p, stop, rm
	}

	// The paths of one run, in an order that rotates from run to run, so
	// every path sees the same machine; vmpod goes first until there is a
	// baseline.
	paths := append([]string{"vmpod", "direct"}, o.variants...)
	fmt.Printf("\n--- sequential boots: %d warm-up + %d timed of each path (%s), interleaved ---\n", o.warmup, o.runs, strings.Join(paths, ", "))
	for i := -o.warmup; i < o.runs; i++ {
		label := fmt.Sprintf("run %2d", i+1)
		if i < 0 {
			label = "warm-up"
		}
		rot := 0
		if i >= 0 && bl != nil {
			rot = i % len(paths)
		}
		var p *podBoot
		var stop, rm time.Duration
		var d directRun
		vd := map[string]directRun{}
		var order []string
		for k := range paths {
			path := paths[(k+rot)%len(paths)]
			order = append(order, path)
			switch path {
			case "vmpod":
				p, stop, rm = bootVmpod()
				if bl == nil {
					b.fatalf("the first vmpod boot failed, so there is no domain XML for the baseline: %v\n%s", p.err, b.vmpod.LogTail(30))
				}
			case "direct":
				n++
				d = b.directBoot(bl, n, "")
			default:
				n++
				vd[path] = b.directBoot(bl, n, path)
			}
		}
		line := fmt.Sprintf("%s (%s): ", label, strings.Join(order, ", "))
		if p.err != nil {
			line += fmt.Sprintf("vmpod FAILED: %v", p.err)
		} else {
			line += fmt.Sprintf("vmpod %s [runp %s, create %s, start %s, then ready %s; stopp %s, rmp %s]",
				ms(p.total()), msf(p.runp), msf(p.create), msf(p.start), ms(p.total()-p.runp-p.create-p.start), ms(stop), ms(rm))
		}
		line += "  direct " + d.String()
		if p.err == nil && d.err == nil {
			line += "  diff " + signedMs(p.total()-d.ready)
		}
		for _, v := range o.variants {
			line += "  " + v + " " + vd[v].String()
		}
		fmt.Println(line)
		if i < 0 {
			continue
		}
		if p.err != nil {
			b.problem("%s: vmpod boot failed: %v", label, p.err)
		}
		if d.err != nil {
			b.problem("%s: direct boot failed: %v", label, d.err)
		}
		if p.err != nil || d.err != nil {
			r.failed++
		}
		if p.err == nil {
			r.vmpod = append(r.vmpod, p)
			r.stop, r.remove = append(r.stop, stop), append(r.remove, rm)
		}
		if d.err == nil {
			r.direct = append(r.direct, d)
		}
		if p.err == nil && d.err == nil {
			r.pairs = append(r.pairs, p.total()-d.ready)
		}
		for v, vr := range vd {
			if vr.err != nil {
				b.problem("%s: %s boot failed: %v", label, v, vr.err)
				continue
			}
			r.variants[v] = append(r.variants[v], vr)
			if d.err == nil {
				r.vpairs[v] = append(r.vpairs[v], vr.ready-d.ready)
			}
		}
	}
	return r
}

// String is the run's line.
func (d directRun) String() string {
	if d.err != nil {
		return fmt.Sprintf("FAILED: %v", d.err)
	}
	return fmt.Sprintf("%s [tap %s, qemu-img %s, define %s, create %s, connect %s, then ready %s; destroy %s]",
		ms(d.ready), msf(d.tap), msf(d.qemuImg), msf(d.define), msf(d.create), msf(d.connect), ms(d.ready-d.tap-d.qemuImg-d.define-d.create-d.connect), ms(d.destroy))
}

func printConcurrent(c *concResult) {
	for _, p := range c.pods {
		if p.err != nil {
			fmt.Printf("  %-7s FAILED after %s: %v\n", p.name, ms(time.Since(p.t0)), p.err)
			continue
		}
		fmt.Printf("  %-7s ready at %s [runp %s, create %s, start %s returned at %s]\n", p.name, ms(p.total()),
			msf(p.runp), ms(p.create), ms(p.start), ms(p.runp+p.create+p.start))
	}
	for _, x := range []struct {
		name string
		ps   pollStats
	}{{"ListPodSandbox", c.list}, {"ListContainers", c.ctrList}, {"Version (control)", c.version}} {
		during, after := x.ps.split(c.lastRPC)
		fmt.Printf("  %s: %d calls; while RPCs ran (to +%s): %d, p50 %s, p99 %s, max %s; then: %d, p50 %s, p99 %s, max %s; slowest:",
			x.name, len(x.ps.lat), ms(c.lastRPC),
			len(during), msf(measure.Percentile(during, 50)), msf(measure.Percentile(during, 99)), msf(measure.Percentile(during, 100)),
			len(after), msf(measure.Percentile(after, 50)), msf(measure.Percentile(after, 99)), msf(measure.Percentile(after, 100)))
		for _, s := range x.ps.slowest {
			fmt.Printf(" %s at +%s;", msf(s.took), ms(s.at))
		}
		fmt.Println()
	}
	fmt.Printf("  teardown (StopPodSandbox+RemovePodSandbox of all pods at once): %s, %d errors\n", ms(c.teardown), len(c.tdErrs))
}

func printSummary(b *bench, s *seqResult, c *concResult, idle, after, final measure.Proc, endLoad string) {
	o := b.opts
	var vt, dt, runp, create, start, vready, stop, rm, tap, qimg, define, vcreate, connect, dready, destroy []time.Duration
	for i, p := range s.vmpod {
		vt = append(vt, p.total())
		runp, create, start = append(runp, p.runp), append(create, p.create), append(start, p.start)
		vready = append(vready, p.total()-p.runp-p.create-p.start)
		stop, rm = append(stop, s.stop[i]), append(rm, s.remove[i])
	}
	for _, d := range s.direct {
		dt = append(dt, d.ready)
		tap, qimg, define = append(tap, d.tap), append(qimg, d.qemuImg), append(define, d.define)
		vcreate, connect = append(vcreate, d.create), append(connect, d.connect)
		dready = append(dready, d.ready-d.tap-d.qemuImg-d.define-d.create-d.connect)
		destroy = append(destroy, d.destroy)
	}

	fmt.Println()
	fmt.Println("==================== vmpod boot benchmark: summary ====================")
	fmt.Printf("machine: %d CPUs, load average at end %s; vmpod %s; accelerator tcg\n", runtime.NumCPU(), endLoad, o.vmpod)
	fmt.Printf("sequential boots, interleaved (%d timed of each, %d warm-up; %d runs with a failure):\n", o.runs, o.warmup, s.failed)
	if len(vt) > 0 && len(dt) > 0 {
		mv, md := measure.Median(vt), measure.Median(dt)
		vmin, vmax := measure.MinMax(vt)
		dmin, dmax := measure.MinMax(dt)
		fmt.Printf("  vmpod  RunPodSandbox -> ready line in the CRI log:     median %s  (min %s, max %s, n=%d)\n", ms(mv), ms(vmin), ms(vmax), len(vt))
		fmt.Printf("  direct tap + qemu-img + define + create -> ready on serial: median %s  (min %s, max %s, n=%d)\n", ms(md), ms(dmin), ms(dmax), len(dt))
		diff, ratio := mv-md, float64(mv)/float64(md)
		fmt.Printf("  difference vmpod - direct: %s (median of the %d per-run differences: %s)   target < %s: %s\n",
			signedMs(diff), len(s.pairs), signedMs(measure.Median(s.pairs)), ms(targetDiff), met(diff < targetDiff))
		fmt.Printf("  ratio vmpod / direct: %.3f   target < %.2f: %s\n", ratio, targetRatio, met(ratio < targetRatio))
		fmt.Printf("  vmpod phases (medians):  RunPodSandbox %s, CreateContainer %s, StartContainer %s, then ready %s; StopPodSandbox %s, RemovePodSandbox %s\n",
			msf(measure.Median(runp)), msf(measure.Median(create)), msf(measure.Median(start)), ms(measure.Median(vready)), ms(measure.Median(stop)), ms(measure.Median(rm)))
		fmt.Printf("  direct phases (medians): tap %s, qemu-img create %s, define %s, create %s, socket connect %s, then ready %s; destroy + undefine %s\n",
			msf(measure.Median(tap)), msf(measure.Median(qimg)), msf(measure.Median(define)), msf(measure.Median(vcreate)), msf(measure.Median(connect)), ms(measure.Median(dready)), ms(measure.Median(destroy)))
		for _, v := range o.variants {
			var rt []time.Duration
			for _, r := range s.variants[v] {
				rt = append(rt, r.ready)
			}
			if len(rt) == 0 {
				continue
			}
			fmt.Printf("  variant %s (%s): %s; minus direct, per run: %s\n", v, variantDoc(v), measure.Spread(rt, ms), measure.Spread(s.vpairs[v], signedMs))
		}
		fmt.Printf("  vmpod before the first boot: RSS %s, %d fds, %d threads; after the sequential boots (no pods): RSS %s (peak %s), %d fds, %d threads\n",
			mib(idle.RSS), idle.FDs, idle.Threads, mib(after.RSS), mib(after.HWM), after.FDs, after.Threads)
	} else {
		fmt.Println("  not enough successful boots to compare")
	}
	if c != nil {
		fmt.Printf("concurrency (%d pods at once):\n", o.pods)
		fmt.Printf("  ready: %d of %d", c.ready, o.pods)
		if c.ready == o.pods {
			fmt.Printf("; all ready %s after the first RunPodSandbox", ms(c.allReady))
		}
		var ready []time.Duration
		for _, p := range c.pods {
			if p.err == nil {
				ready = append(ready, p.total())
			}
		}
		if len(ready) > 0 {
			lo, hi := measure.MinMax(ready)
			fmt.Printf(" (first %s, median %s, last %s)", ms(lo), ms(measure.Median(ready)), ms(hi))
		}
		fmt.Printf("; last StartContainer returned at %s\n", ms(c.lastRPC))
		l := c.list
		p99 := measure.Percentile(l.lat, 99)
		fmt.Printf("  ListPodSandbox every %v: %d calls, p50 %s, p99 %s, max %s, %d errors   target p99 < %s: %s\n",
			o.listInterval, len(l.lat), msf(measure.Percentile(l.lat, 50)), msf(p99), msf(measure.Percentile(l.lat, 100)), l.errs, ms(targetListP99), met(p99 < targetListP99 && len(l.lat) > 0))
		if sv := c.server["ListPodSandbox"]; len(sv) > 0 {
			fmt.Printf("  ListPodSandbox as vmpod logged it (handler time, without transport and client): %d calls, p50 %s, p99 %s, max %s\n",
				len(sv), msf(measure.Percentile(sv, 50)), msf(measure.Percentile(sv, 99)), msf(measure.Percentile(sv, 100)))
		} else {
			fmt.Println("  (run with -log-level debug to also see ListPodSandbox's handler time as vmpod logs it)")
		}
		cl := c.ctrList
		fmt.Printf("  ListContainers (same period, for information): %d calls, p50 %s, p99 %s, max %s, %d errors\n",
			len(cl.lat), msf(measure.Percentile(cl.lat, 50)), msf(measure.Percentile(cl.lat, 99)), msf(measure.Percentile(cl.lat, 100)), cl.errs)
		vl := c.version
		fmt.Printf("  Version (same period; control: reads no vmpod state, so it shows the machine's scheduling delay): %d calls, p50 %s, p99 %s, max %s, %d errors\n",
			len(vl.lat), msf(measure.Percentile(vl.lat, 50)), msf(measure.Percentile(vl.lat, 99)), msf(measure.Percentile(vl.lat, 100)), vl.errs)
		fmt.Printf("  vmpod RSS with %d VMs running: %s (peak so far %s, %d fds, %d threads)   target < 60 MiB: %s\n",
			c.qemuN, mib(c.vmpod.RSS), mib(c.vmpod.HWM), c.vmpod.FDs, c.vmpod.Threads, met(c.vmpod.RSS > 0 && c.vmpod.RSS < targetRSSKiB))
		fmt.Printf("  QEMU RSS, %d qemu-system-x86_64 processes: %s total (%s each on average; for information)\n",
			c.qemuN, mib(c.qemuRSS), mib(c.qemuRSS/max(c.qemuN, 1)))
		fmt.Printf("  teardown of all pods at once: %s; vmpod domains left: %d; pods left: %d; files left: %d\n",
			ms(c.teardown), len(c.left), c.podsLeft, len(c.leftover))
		fmt.Printf("  vmpod after teardown: RSS %s, %d fds, %d threads\n", mib(final.RSS), final.FDs, final.Threads)
	}
	if len(b.foreignAtStart) > 0 {
		fmt.Printf("note: %d other vmpod-* domain(s) were on libvirtd at the start (someone else's load on the machine)\n", len(b.foreignAtStart))
	}
	fmt.Printf("problems seen: %d\n", len(b.problems))
	for _, p := range b.problems {
		fmt.Println("  - " + p)
	}
	fmt.Printf("vmpod WARN/ERROR log lines: %d\n", len(b.logLines))
	for i, l := range b.logLines {
		if i == 20 {
			fmt.Printf("  ... %d more\n", len(b.logLines)-20)
			break
		}
		fmt.Println("  " + strings.TrimSpace(l))
	}
	fmt.Println("=======================================================================")
}
