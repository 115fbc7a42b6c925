package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

// sample is the processes' state with a number of pods running and idle.
type sample struct {
	pods             int
	vmpod, libvirtd  measure.Proc
	qemuN            int
	qemuRSS, qemuPSS int // KiB, sums over the pods' QEMU processes
	memAvail         int // KiB
	load             string
	cpu              cpuUse // during the idle time before the sample
}

// cpuTime is the CPU time vmpod, libvirtd and the pods' QEMUs used so
// far, at a time.
type cpuTime struct {
	at                    time.Time
	vmpod, libvirtd, qemu time.Duration
}

// cpuUse is the CPU vmpod, libvirtd and all the QEMUs used over a time,
// in cores.
type cpuUse struct{ vmpod, libvirtd, qemu float64 }

func (c cpuTime) since(old cpuTime) cpuUse {
	d := c.at.Sub(old.at).Seconds()
	if d <= 0 {
		return cpuUse{}
	}
	return cpuUse{(c.vmpod - old.vmpod).Seconds() / d, (c.libvirtd - old.libvirtd).Seconds() / d, (c.qemu - old.qemu).Seconds() / d}
}

// cpu reads the CPU time of vmpod, libvirtd and the QEMU of every pod
// started so far.
func (b *bench) cpu() cpuTime {
	c := cpuTime{at: time.Now(), vmpod: measure.CPUTime(b.v.Pid())}
	if pid, err := pidFile("/run/libvirtd.pid"); err == nil {
		c.libvirtd = measure.CPUTime(pid)
	}
	for _, pid := range b.qemuPids() {
		c.qemu += measure.CPUTime(pid)
	}
	return c
}

// qemuPids returns the QEMU process of every pod started so far that has
// one.
func (b *bench) qemuPids() []int {
	b.mu.Lock()
	ps := append([]*pod(nil), b.pods...)
	b.mu.Unlock()
	var out []int
	for _, p := range ps {
		if p.ctrID == "" {
			continue
		}
		if pid, err := pidFile(filepath.Join("/run/libvirt/qemu", "vmpod-"+p.ctrID+".pid")); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func (s sample) String() string {
	return fmt.Sprintf("%d pods: vmpod RSS %s, %d fds, %d threads; libvirtd RSS %s, %d fds; %d QEMU: RSS %s, PSS %s; MemAvailable %s; load %s; idle CPU: vmpod %s, libvirtd %s, QEMUs %s",
		s.pods, mib(s.vmpod.RSS), s.vmpod.FDs, s.vmpod.Threads, mib(s.libvirtd.RSS), s.libvirtd.FDs, s.qemuN, mib(s.qemuRSS), mib(s.qemuPSS), mib(s.memAvail), s.load,
		millicores(s.cpu.vmpod), millicores(s.cpu.libvirtd), millicores(s.cpu.qemu))
}

// sample reads vmpod, libvirtd (its pid file, as hack/start-libvirt.sh
// finds it) and the QEMU process of every started pod.
func (b *bench) sample(pods int) (sample, error) {
	s := sample{pods: pods, memAvail: memAvailable(), load: measure.LoadAvg()}
	var err error
	if s.vmpod, err = measure.ReadProc(b.v.Pid()); err != nil {
		return s, fmt.Errorf("vmpod: %w", err)
	}
	pid, err := pidFile("/run/libvirtd.pid")
	if err != nil {
		return s, fmt.Errorf("libvirtd: %w", err)
	}
	if s.libvirtd, err = measure.ReadProc(pid); err != nil {
		return s, fmt.Errorf("libvirtd: %w", err)
	}
	for _, pid := range b.qemuPids() {
		m, err := measure.SmapsRollup(pid)
		if err != nil {
			continue
		}
		s.qemuN++
		s.qemuRSS += m["Rss"]
		s.qemuPSS += m["Pss"]
	}
	return s, nil
}

func pidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var pid int
	_, err = fmt.Sscan(string(b), &pid)
	return pid, err
}

// memAvailable is the host's MemAvailable in KiB, 0 when unreadable.
func memAvailable() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemAvailable:") {
			var kib int
			fmt.Sscan(strings.TrimPrefix(l, "MemAvailable:"), &kib)
			return kib
		}
	}
	return 0
}

// fit is the least-squares line y = a + b·x through the points.
func fit(xs, ys []float64) (a, b float64) {
	n := float64(len(xs))
	if n < 2 {
		return 0, 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return sy / n, 0
	}
	b = (n*sxy - sx*sy) / d
	return (sy - b*sx) / n, b
}

// report is what a run measured.
type report struct {
	samples  []sample
	waves    []waveResult
	allReady time.Duration // first RunPodSandbox to the last pod's ready line
	stopped  string        // why fewer than -pods ran, if so
	failed   []string      // waves with pods that did not get ready
	wall     time.Duration
}

func millicores(cores float64) string { return fmt.Sprintf("%.0fm", cores*1000) }

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// latency is "p50 / p99 / max (n)" of ds.
func latency(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s (%d)", ms(measure.Percentile(ds, 50)), ms(measure.Percentile(ds, 99)), ms(measure.Percentile(ds, 100)), len(ds))
}

// write prints the report and writes its docs/benchmarks.md section to md.
func (r *report) write(b *bench, md string) error {
	o := b.o
	last := r.samples[len(r.samples)-1]
	sec := measure.NewSection("density", o.vmpodBin, 1)
	sec.Printf("%d pods asked for, in waves of %d started at once, each the test guest with %s of guest RAM and a %d MiB TCG translation cache (`tcg_tb_cache_mib`); "+
		"the load loops call each list, status and stats RPC every %v and ExecSync `true` every %v throughout, and run %v with the pods idle after each wave.\n\n",
		o.pods, o.wave, o.memory, o.tbCache, o.interval, o.execEvery, o.settle)
	var waves []string
	for _, w := range r.waves {
		waves = append(waves, fmt.Sprintf("%.1f s", w.took.Seconds()))
	}
	if r.stopped != "" {
		sec.Printf("**Only %d pods ran**: %s.\n\n", last.pods, r.stopped)
	}
	for _, f := range r.failed {
		sec.Printf("**Not ready**: %s.\n\n", f)
	}
	sec.Printf("%d pods were ready %.1f s after the first RunPodSandbox, counting the %v idle measurement after each wave but the last; each wave took from its first RunPodSandbox to its last ready line: %s.\n\n",
		last.pods, r.allReady.Seconds(), o.settle, strings.Join(waves, ", "))

	// Resources at each count.
	var rows [][]string
	for _, s := range r.samples {
		per := func(kib int) string {
			if s.qemuN == 0 {
				return "–"
			}
			return fmt.Sprintf("%s (%s per VM)", mib(kib), mib(kib/s.qemuN))
		}
		rows = append(rows, []string{fmt.Sprint(s.pods), mib(s.vmpod.RSS), fmt.Sprint(s.vmpod.FDs), fmt.Sprint(s.vmpod.Threads),
			mib(s.libvirtd.RSS), fmt.Sprint(s.libvirtd.FDs), per(s.qemuRSS), per(s.qemuPSS), mib(s.memAvail),
			fmt.Sprintf("%s / %s / %s", millicores(s.cpu.vmpod), millicores(s.cpu.libvirtd), millicores(s.cpu.qemu)), s.load})
	}
	sec.Printf("Resources with the pods idle, read at the end of the %v after each wave (CPU: used over those %v, in millicores, the load loops' calls included):\n\n", o.settle, o.settle)
	sec.Table([]string{"pods", "vmpod RSS", "vmpod fds", "vmpod threads", "libvirtd RSS", "libvirtd fds", "QEMU RSS, sum", "QEMU PSS, sum", "MemAvailable", "CPU idle: vmpod / libvirtd / QEMUs", "load average"}, rows)

	// Slopes and the estimate.
	xs := make([]float64, len(r.samples))
	for i, s := range r.samples {
		xs[i] = float64(s.pods)
	}
	series := func(f func(sample) int) []float64 {
		ys := make([]float64, len(r.samples))
		for i, s := range r.samples {
			ys[i] = float64(f(s))
		}
		return ys
	}
	rows = nil
	n := float64(o.estimate)
	kibRow := func(name string, f func(sample) int) {
		a, sl := fit(xs, series(f))
		rows = append(rows, []string{name, fmt.Sprintf("%.2f MiB", sl/1024), mib(int(a)), mib(int(a + sl*n))})
	}
	countRow := func(name string, f func(sample) int) {
		a, sl := fit(xs, series(f))
		rows = append(rows, []string{name, fmt.Sprintf("%.2f", sl), fmt.Sprintf("%.0f", a), fmt.Sprintf("%.0f", a+sl*n)})
	}
	kibRow("vmpod RSS", func(s sample) int { return s.vmpod.RSS })
	countRow("vmpod fds", func(s sample) int { return s.vmpod.FDs })
	countRow("vmpod threads", func(s sample) int { return s.vmpod.Threads })
	kibRow("libvirtd RSS", func(s sample) int { return s.libvirtd.RSS })
	countRow("libvirtd fds", func(s sample) int { return s.libvirtd.FDs })
	kibRow("QEMU RSS, sum", func(s sample) int { return s.qemuRSS })
	kibRow("QEMU PSS, sum", func(s sample) int { return s.qemuPSS })
	coresRow := func(name string, f func(sample) float64) {
		ys := make([]float64, len(r.samples))
		for i, s := range r.samples {
			ys[i] = f(s)
		}
		a, sl := fit(xs, ys)
		rows = append(rows, []string{name, millicores(sl), millicores(a), millicores(a + sl*n)})
	}
	coresRow("vmpod CPU, idle pods", func(s sample) float64 { return s.cpu.vmpod })
	coresRow("libvirtd CPU, idle pods", func(s sample) float64 { return s.cpu.libvirtd })
	coresRow("QEMU CPU, idle pods, sum", func(s sample) float64 { return s.cpu.qemu })
	kibRow("host memory used (MemAvailable's drop)", func(s sample) int { return r.samples[0].memAvail - s.memAvail })
	if len(r.samples) >= 2 {
		sec.Printf("Least-squares lines through the %d samples above, and where they reach at %d pods:\n\n", len(r.samples), o.estimate)
		sec.Table([]string{"", "per pod", "at 0 pods", fmt.Sprintf("at %d pods", o.estimate)}, rows)
	}

	// Calls.
	booting := func(p phase) bool { return p.booting }
	idleAt := func(n int) func(phase) bool { return func(p phase) bool { return !p.booting && p.pods == n } }
	rows = nil
	for _, m := range append([]string{"RunPodSandbox", "CreateContainer", "StartContainer"}, loopMethods...) {
		row := []string{m, latency(b.calls.durations(m, booting)), latency(b.calls.durations(m, idleAt(last.pods)))}
		if e := b.calls.nErrs[m]; e > 0 {
			row[0] += fmt.Sprintf(" (%d errors, last: %v)", e, b.calls.last[m])
		}
		rows = append(rows, row)
	}
	sec.Printf("Every CRI call, p50 / p99 / max (calls), while the waves booted and with all %d pods idle:\n\n", last.pods)
	sec.Table([]string{"call", "while booting", fmt.Sprintf("%d pods idle", last.pods)}, rows)

	rows = nil
	for _, s := range r.samples {
		row := []string{fmt.Sprint(s.pods)}
		for _, m := range []string{"ListPodSandbox", "ListContainerStats", "ListPodSandboxStats", "ExecSync"} {
			row = append(row, latency(b.calls.durations(m, idleAt(s.pods))))
		}
		rows = append(rows, row)
	}
	sec.Printf("The same with the pods idle at each count:\n\n")
	sec.Table([]string{"pods idle", "ListPodSandbox", "ListContainerStats", "ListPodSandboxStats", "ExecSync"}, rows)

	cs := measure.Percentile(b.calls.durations("ListContainerStats", idleAt(last.pods)), 99)
	ps := measure.Percentile(b.calls.durations("ListPodSandboxStats", idleAt(last.pods)), 99)
	met := func(d time.Duration) string {
		if d < 50*time.Millisecond {
			return "met"
		}
		return "**not met**"
	}
	sec.Printf("Stats at %d idle VMs: ListContainerStats p99 %s, ListPodSandboxStats p99 %s (target at 100 VMs: p99 under 50 ms: %s, %s).\n",
		last.pods, ms(cs), ms(ps), met(cs), met(ps))

	fmt.Print("\n" + sec.String())
	fmt.Printf("\nwall time %.0f s\n", r.wall.Seconds())
	return sec.Write(md)
}
