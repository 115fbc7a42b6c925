package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

// concResult is the concurrency phase: n pods booted at once while the
// kubelet's polling is imitated.
type concResult struct {
	pods     []*podBoot
	ready    int
	allReady time.Duration // t0 to the last ready line, when all got there
	lastRPC  time.Duration // t0 to the last StartContainer returning
	list     pollStats     // ListPodSandbox
	ctrList  pollStats     // ListContainers (for information)
	version  pollStats     // Version: reads no state, so its latency is the machine's, not vmpod's locks
	// server is vmpod's own "call done" duration of each call made in the
	// phase, by method, from its log (debug level only).
	server   map[string][]time.Duration
	vmpod    measure.Proc // with the VMs running
	qemuRSS  int          // KiB, sum over the pods' QEMU processes
	qemuN    int
	teardown time.Duration
	tdErrs   []error
	left     []string // our domains still defined after teardown
	leftover []string // files left in vmpod's per-container dirs
	podsLeft int
}

// pollStats are the latencies of a call made in a loop.
type pollStats struct {
	lat     []time.Duration
	at      []time.Duration // when each call started, since t0
	errs    int
	lastErr error
	slowest []slowCall
}

type slowCall struct {
	at, took time.Duration // at: since t0
}

// pollLoop calls call every interval (or right after the previous call
// when that took longer) until stop is closed.
func pollLoop(t0 time.Time, interval time.Duration, stop <-chan struct{}, call func(context.Context) error) *pollStats {
	ps := &pollStats{}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := call(ctx)
		cancel()
		took := time.Since(start)
		ps.lat = append(ps.lat, took)
		ps.at = append(ps.at, start.Sub(t0))
		if err != nil {
			ps.errs++
			ps.lastErr = err
		}
		ps.slowest = append(ps.slowest, slowCall{at: start.Sub(t0), took: took})
		slices.SortFunc(ps.slowest, func(a, b slowCall) int { return int(b.took - a.took) })
		if len(ps.slowest) > 3 {
			ps.slowest = ps.slowest[:3]
		}
		select {
		case <-stop:
			return ps
		case <-tick.C:
		}
	}
}

// split returns the latencies of the calls started before and after t
// (since t0).
func (ps *pollStats) split(t time.Duration) (before, after []time.Duration) {
	for i, l := range ps.lat {
		if ps.at[i] < t {
			before = append(before, l)
		} else {
			after = append(after, l)
		}
	}
	return before, after
}

// insideWait is a slow call that the control calls made meanwhile do not
// explain.
type insideWait struct{ at, took, control time.Duration }

// waitedInside returns the slowest call over 50 ms that took more than
// three times the slowest control call overlapping it: such a call waited
// inside vmpod, since the control (Version, which reads no vmpod state)
// went through the same machine, connection and server at the same time.
func (ps *pollStats) waitedInside(control *pollStats) *insideWait {
	var worst *insideWait
	for i, took := range ps.lat {
		if took < 50*time.Millisecond || (worst != nil && took <= worst.took) {
			continue
		}
		start, end := ps.at[i], ps.at[i]+took
		var c time.Duration
		overlapping := 0
		for j, ct := range control.lat {
			if control.at[j] < end && control.at[j]+ct > start {
				c = max(c, ct)
				overlapping++
			}
		}
		if overlapping > 0 && took > 3*c {
			worst = &insideWait{at: start, took: took, control: c}
		}
	}
	return worst
}

// concurrent boots n pods at once through vmpod, measures the polling
// calls and memory, then removes them all and checks nothing is left.
func (b *bench) concurrent(n int) *concResult {
	r := &concResult{}
	names := make([]string, n)
	watchers := make([]*logWatcher, n)
	for i := range n {
		names[i] = fmt.Sprintf("conc-%d", i)
		w, err := newLogWatcher(b.crilogPath(names[i]), b.opts.poll)
		if err != nil {
			b.fatalf("%v", err)
		}
		defer w.close()
		watchers[i] = w
	}

	logStart := fileSize(b.vmpodLog)
	stop := make(chan struct{})
	var pollers sync.WaitGroup
	t0 := time.Now()
	pollers.Add(3)
	go func() {
		defer pollers.Done()
		r.version = *pollLoop(t0, b.opts.listInterval, stop, func(ctx context.Context) error {
			_, err := b.rt.Version(ctx, &runtimeapi.VersionRequest{})
			return err
		})
	}()
	go func() {
		defer pollers.Done()
		r.list = *pollLoop(t0, b.opts.listInterval, stop, func(ctx context.Context) error {
			_, err := b.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			return err
		})
	}()
	go func() {
		defer pollers.Done()
		r.ctrList = *pollLoop(t0, b.opts.listInterval, stop, func(ctx context.Context) error {
			_, err := b.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			return err
		})
	}()

	deadline := t0.Add(b.opts.concTimeout)
	r.pods = make([]*podBoot, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pods[i] = b.bootPod(names[i], watchers[i], t0, deadline)
		}()
	}
	wg.Wait()
	close(stop)
	pollers.Wait()

	r.server = callDurations(b.vmpodLog, logStart, fileSize(b.vmpodLog))
	for _, x := range []struct {
		name string
		ps   *pollStats
	}{{"ListPodSandbox", &r.list}, {"ListContainers", &r.ctrList}} {
		if w := x.ps.waitedInside(&r.version); w != nil {
			b.problem("%s took %s at +%s while the Version calls made meanwhile took at most %s: it waited inside vmpod (a lock or libvirt), not for the CPU",
				x.name, msf(w.took), ms(w.at), msf(w.control))
		}
	}

	var readyAt []time.Duration
	for _, p := range r.pods {
		r.lastRPC = max(r.lastRPC, p.runp+p.create+p.start)
		if p.err == nil {
			r.ready++
			readyAt = append(readyAt, p.total())
		} else {
			b.problem("concurrent pod %s: %v", p.name, p.err)
		}
	}
	if r.ready == n {
		r.allReady = slices.Max(readyAt)
	}

	// Memory with the VMs up (those that booted, at least).
	if ps, err := measure.ReadProc(b.vmpod.Pid()); err == nil {
		r.vmpod = ps
	}
	for _, p := range r.pods {
		if p.ctrID == "" {
			continue
		}
		if kib, err := qemuRSS("vmpod-" + p.ctrID); err == nil {
			r.qemuRSS += kib
			r.qemuN++
		}
	}

	// Teardown, all at once as the kubelet would.
	td := time.Now()
	var mu sync.Mutex
	for _, p := range r.pods {
		if p.podID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := b.removePod(p.podID); err != nil {
				mu.Lock()
				r.tdErrs = append(r.tdErrs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.teardown = time.Since(td)
	for _, err := range r.tdErrs {
		b.problem("concurrent teardown: %v", err)
	}

	// Nothing may be left: no domain, no pod, no per-container files.
	if all, err := b.virshNames(); err == nil {
		for _, p := range r.pods {
			if p.ctrID != "" && slices.Contains(all, "vmpod-"+p.ctrID) {
				r.left = append(r.left, "vmpod-"+p.ctrID)
			}
		}
	} else {
		b.problem("virsh list after teardown: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if l, err := b.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		r.podsLeft = len(l.GetItems())
	}
	cancel()
	r.leftover = b.leftoverFiles()
	if len(r.left) > 0 {
		b.problem("after stopping and removing all %d pods, their domains still exist: %v", n, r.left)
	}
	if r.podsLeft > 0 {
		b.problem("after removing all pods, ListPodSandbox still returns %d", r.podsLeft)
	}
	if len(r.leftover) > 0 {
		b.problem("after removing all pods, files are left: %v", r.leftover)
	}
	return r
}

// leftoverFiles lists what is left in vmpod's per-container directories
// (state dir and sockets) once no container exists.
func (b *bench) leftoverFiles() []string {
	var out []string
	for _, d := range []string{filepath.Join(b.stateDir, "containers"), filepath.Join(filepath.Dir(b.socket), "vms")} {
		es, _ := os.ReadDir(d)
		for _, e := range es {
			out = append(out, filepath.Join(d, e.Name()))
		}
	}
	return out
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

var callDoneRE = regexp.MustCompile(`msg="call done" method=(\w+) duration=(\S+)`)

// callDurations reads vmpod's text log between two offsets and returns the
// handler duration it logged for each call, by method. Polling calls are
// logged only at debug level.
func callDurations(path string, from, to int64) map[string][]time.Duration {
	out := map[string][]time.Duration{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return out
	}
	sc := bufio.NewScanner(io.LimitReader(f, to-from))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := callDoneRE.FindStringSubmatch(sc.Text()); m != nil {
			if d, err := time.ParseDuration(m[2]); err == nil {
				out[m[1]] = append(out[m[1]], d)
			}
		}
	}
	return out
}
