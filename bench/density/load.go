package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// phase is what was going on when a call started: how many pods were
// started (including a booting wave) and whether a wave was booting.
type phase struct {
	pods    int
	booting bool
}

// call is one timed CRI call.
type call struct {
	method string
	phase  phase
	took   time.Duration
	err    error
}

// calls records every CRI call the benchmark makes.
type calls struct {
	mu    sync.Mutex
	now   phase
	all   []call
	nErrs map[string]int
	last  map[string]error
}

func newCalls() *calls { return &calls{nErrs: map[string]int{}, last: map[string]error{}} }

func (c *calls) setPhase(pods int, booting bool) {
	c.mu.Lock()
	c.now = phase{pods, booting}
	c.mu.Unlock()
}

// time runs f and records how long it took under method.
func (c *calls) time(method string, f func() error) error {
	c.mu.Lock()
	ph := c.now
	c.mu.Unlock()
	start := time.Now()
	err := f()
	took := time.Since(start)
	c.mu.Lock()
	c.all = append(c.all, call{method, ph, took, err})
	if err != nil {
		c.nErrs[method]++
		c.last[method] = err
	}
	c.mu.Unlock()
	return err
}

// select returns the durations of method's successful calls for which
// keep is true.
func (c *calls) durations(method string, keep func(phase) bool) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, x := range c.all {
		if x.method == method && x.err == nil && keep(x.phase) {
			out = append(out, x.took)
		}
	}
	return out
}

// loopMethods are the calls the load loops make, in report order after
// the three that start a pod.
var loopMethods = []string{"ListPodSandbox", "PodSandboxStatus", "ListContainers", "ContainerStatus",
	"ListContainerStats", "ListPodSandboxStats", "ExecSync"}

// startLoad starts one loop per method of loopMethods, each calling
// vmpod, pausing -interval (ExecSync: -exec-interval) and calling again
// until ctx ends, as a kubelet's relisting, status, stats and exec probes
// would. The status calls go round the pods started so far, ExecSync
// (`true`) round the ready ones.
func (b *bench) startLoad(ctx context.Context) *sync.WaitGroup {
	rt := b.g.RT
	var next = map[string]int{}
	var nextMu sync.Mutex
	// pick returns the i-th of the pods (or the ready ones) round-robin,
	// nil when there is none yet.
	pick := func(method string, ready bool) *pod {
		b.mu.Lock()
		defer b.mu.Unlock()
		ps := b.pods
		if ready {
			ps = b.ready
		}
		var with []*pod
		for _, p := range ps {
			if p.podID != "" && (!ready || p.ctrID != "") && (method != "ContainerStatus" || p.ctrID != "") {
				with = append(with, p)
			}
		}
		if len(with) == 0 {
			return nil
		}
		nextMu.Lock()
		defer nextMu.Unlock()
		next[method]++
		return with[next[method]%len(with)]
	}
	loops := map[string]func(context.Context) (bool, error){
		"ListPodSandbox": func(ctx context.Context) (bool, error) {
			_, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			return true, err
		},
		"ListContainers": func(ctx context.Context) (bool, error) {
			_, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			return true, err
		},
		"ListContainerStats": func(ctx context.Context) (bool, error) {
			_, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
			return true, err
		},
		"ListPodSandboxStats": func(ctx context.Context) (bool, error) {
			_, err := rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
			return true, err
		},
		"PodSandboxStatus": func(ctx context.Context) (bool, error) {
			p := pick("PodSandboxStatus", false)
			if p == nil {
				return false, nil
			}
			_, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.podID})
			return true, err
		},
		"ContainerStatus": func(ctx context.Context) (bool, error) {
			p := pick("ContainerStatus", false)
			if p == nil {
				return false, nil
			}
			_, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: p.ctrID})
			return true, err
		},
		"ExecSync": func(ctx context.Context) (bool, error) {
			p := pick("ExecSync", true)
			if p == nil {
				return false, nil
			}
			r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: p.ctrID, Cmd: []string{"true"}, Timeout: 30})
			if err == nil && r.ExitCode != 0 {
				err = fmt.Errorf("true in %s exited %d: %s", p.name, r.ExitCode, r.Stderr)
			}
			return true, err
		},
	}
	var wg sync.WaitGroup
	for _, m := range loopMethods {
		f := loops[m]
		pause := b.o.interval
		if m == "ExecSync" {
			pause = b.o.execEvery
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				var made bool
				b.calls.time(m, func() error {
					cctx, cancel := context.WithTimeout(ctx, time.Minute)
					defer cancel()
					var err error
					made, err = f(cctx)
					return err
				})
				if !made || ctx.Err() != nil {
					b.calls.drop(m) // nothing to call yet, or cut short by the end of the run
				}
				sleep(ctx, pause)
			}
		}()
	}
	return &wg
}

// drop forgets method's last call: one that had nothing to call.
func (c *calls) drop(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.all) - 1; i >= 0; i-- {
		if c.all[i].method == method {
			if c.all[i].err != nil {
				c.nErrs[method]--
			}
			c.all = append(c.all[:i], c.all[i+1:]...)
			return
		}
	}
}
