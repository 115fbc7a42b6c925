package main

import (
	"fmt"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

// writeSection fills the benchmark's section of docs/benchmarks.md.
func writeSection(sec *measure.Section, b *bench, s *seqResult, c *concResult, endLoad string) {
	o := b.opts
	sec.Printf("From `RunPodSandbox` to `vmpod-test-guest ready` in the container's CRI log, against the same domain XML "+
		"defined and started through the libvirt API without vmpod (its NIC on a tap the benchmark makes on a bridge of its own, "+
		"a fresh overlay from `qemu-img create`, a copy of the pod's seed), timed to the ready line on its serial socket; "+
		"interleaved, the order rotating every run, %d timed runs each after %d warm-up; load average %s at the end.\n\n",
		o.runs, o.warmup, endLoad)
	var vt, dt, runp, create, start, tap, qimg, define, dcreate []time.Duration
	for _, p := range s.vmpod {
		vt = append(vt, p.total())
		runp, create, start = append(runp, p.runp), append(create, p.create), append(start, p.start)
	}
	for _, d := range s.direct {
		dt = append(dt, d.ready)
		tap, qimg, define, dcreate = append(tap, d.tap), append(qimg, d.qemuImg), append(define, d.define), append(dcreate, d.create)
	}
	if len(vt) == 0 || len(dt) == 0 {
		sec.Printf("Not enough successful boots to compare (%d runs with a failure).\n\n", s.failed)
	} else {
		rows := [][]string{
			{"vmpod", measure.Spread(vt, ms), fmt.Sprintf("RunPodSandbox %s, CreateContainer %s, StartContainer %s",
				msf(measure.Median(runp)), msf(measure.Median(create)), msf(measure.Median(start)))},
			{"direct (libvirt API)", measure.Spread(dt, ms), fmt.Sprintf("tap %s, qemu-img %s, define %s, create %s",
				msf(measure.Median(tap)), msf(measure.Median(qimg)), msf(measure.Median(define)), msf(measure.Median(dcreate)))},
			{"vmpod − direct, per run", measure.Spread(s.pairs, signedMs), ""},
		}
		for _, v := range o.variants {
			var rt []time.Duration
			for _, r := range s.variants[v] {
				rt = append(rt, r.ready)
			}
			if len(rt) > 0 {
				rows = append(rows, []string{"direct with " + variantDoc(v), measure.Spread(rt, ms), "minus direct, per run: " + measure.Spread(s.vpairs[v], signedMs)})
			}
		}
		sec.Table([]string{"", "to ready: median (spread)", "medians of the steps"}, rows)
		mv, md := measure.Median(vt), measure.Median(dt)
		diff, ratio := mv-md, float64(mv)/float64(md)
		sec.Printf("Difference of the medians %s, ratio %.3f (targets < %s and < %.0f%%: %s).", signedMs(diff), ratio,
			ms(targetDiff), (targetRatio-1)*100, met(diff < targetDiff && ratio < targetRatio))
		if s.failed > 0 {
			sec.Printf(" %d runs had a failure and are left out.", s.failed)
		}
		sec.Printf("\n\n")
	}
	if c == nil {
		return
	}
	sec.Printf("%d pods started at once: %d reached ready", o.pods, c.ready)
	if c.ready == o.pods {
		sec.Printf(", the last %s after the first RunPodSandbox", measure.Secs(c.allReady))
	}
	var ready []time.Duration
	for _, p := range c.pods {
		if p.err == nil {
			ready = append(ready, p.total())
		}
	}
	if len(ready) > 0 {
		sec.Printf(" (each pod's own RunPodSandbox to ready: %s)", measure.Spread(ready, ms))
	}
	l, v := c.list, c.version
	sec.Printf(". ListPodSandbox every %v meanwhile: %d calls, p50 %s, p99 %s, max %s, %d errors (target p99 < %s: %s); "+
		"`Version` in the same loop, which reads no state: p99 %s, max %s. vmpod's RSS with the %d VMs running: %s (target < 60 MiB: %s).\n",
		o.listInterval, len(l.lat), msf(measure.Percentile(l.lat, 50)), msf(measure.Percentile(l.lat, 99)), msf(measure.Percentile(l.lat, 100)), l.errs,
		ms(targetListP99), met(measure.Percentile(l.lat, 99) < targetListP99 && len(l.lat) > 0),
		msf(measure.Percentile(v.lat, 99)), msf(measure.Percentile(v.lat, 100)), c.qemuN, mib(c.vmpod.RSS), met(c.vmpod.RSS > 0 && c.vmpod.RSS < targetRSSKiB))
}
