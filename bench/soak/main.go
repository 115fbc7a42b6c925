// Command soak runs the kubelet's pod life cycle over and over against one
// vmpod and watches what it holds: -cycles cycles of RunPodSandbox,
// CreateContainer, StartContainer, ExecSync (`true`, which waits for the
// booting guest's agent), StopContainer (-stop-timeout grace),
// RemoveContainer, StopPodSandbox and RemovePodSandbox, with faults mixed
// in: every -restart-every cycles libvirtd is restarted while the VM runs
// (between start and exec), and every -kill-every cycles vmpod is killed
// with SIGKILL between create and start and started again.
//
// Every -sample cycles it reads vmpod's open fds, goroutines
// (go_goroutines on the metrics endpoint), threads and RSS, libvirtd's
// open fds, and the host objects vmpod made for this run's pods (their
// domains, netns and taps), the files under its state and run directories
// and the metadata file's size; it
// prints them and, at the end, each one's growth per 100 cycles (least
// squares over the samples after the first). The reference is the first
// sample, taken after -warmup cycles: a runtime that leaks nothing shows
// no growth. Failed CRI calls are counted; a fault must fail none.
//
// Usage (root, libvirtd running, vmpod built, guest image built):
//
//	go build -o bin/vmpod ./cmd/vmpod
//	go run ./bench/soak -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2 -cycles 100
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

type options struct {
	vmpod, guest, startLibvirt string
	cycles, warmup, sample     int
	restartEvery, killEvery    int
	stopTimeout                int64
	metricsAddr                string
}

func main() {
	var o options
	flag.StringVar(&o.vmpod, "vmpod", "bin/vmpod", "vmpod binary")
	flag.StringVar(&o.guest, "guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "test guest image")
	flag.StringVar(&o.startLibvirt, "start-libvirt", "hack/start-libvirt.sh", "script that starts libvirtd after it was stopped")
	flag.IntVar(&o.cycles, "cycles", 100, "measured cycles")
	flag.IntVar(&o.warmup, "warmup", 3, "cycles before the first sample")
	flag.IntVar(&o.sample, "sample", 10, "cycles between samples")
	flag.IntVar(&o.restartEvery, "restart-every", 50, "restart libvirtd during every N-th cycle (0: never)")
	flag.IntVar(&o.killEvery, "kill-every", 50, "kill -9 and restart vmpod during every N-th cycle, offset by N/2 (0: never)")
	flag.Int64Var(&o.stopTimeout, "stop-timeout", 5, "StopContainer grace period, seconds")
	flag.Parse()
	if err := soak(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/soak:", err)
		os.Exit(1)
	}
}

func soak(o options) error {
	work, err := os.MkdirTemp("", "vmpod-bench-soak-")
	if err != nil {
		return err
	}
	os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	confDir, cleanup, err := measure.BridgeCNI(work, "vmpod-bench-soak", "vmpodsoak0", "10.247.0.0/16")
	if err != nil {
		return err
	}
	defer cleanup()
	port, err := freePort()
	if err != nil {
		return err
	}
	o.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	v, err := measure.StartVmpod(o.vmpod, work, "VMPOD_ACCELERATOR=tcg", "VMPOD_TCG_TB_CACHE_MIB=256",
		"VMPOD_CNI_CONF_DIR="+confDir, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/images.d", "VMPOD_METRICS_ADDRESS="+o.metricsAddr)
	if err != nil {
		return err
	}
	defer v.Close()
	g, err := measure.PullGuest(v, o.guest)
	if err != nil {
		return err
	}
	defer g.Close()
	version, _ := exec.Command(o.vmpod, "version").Output()
	fmt.Printf("vmpod %s; %d cycles after %d warm-up, sampled every %d; libvirtd restarted every %d, vmpod killed every %d; load %s\n",
		strings.TrimSpace(string(version)), o.cycles, o.warmup, o.sample, o.restartEvery, o.killEvery, measure.LoadAvg())

	s := &soaker{o: o, v: v, g: g, work: work}
	var samples []sample
	var cycleTimes []time.Duration
	for i := -o.warmup; i < o.cycles; i++ {
		if i >= 0 && i%o.sample == 0 {
			smp, err := s.sample(i)
			if err != nil {
				return err
			}
			samples = append(samples, smp)
			smp.print(len(samples) == 1)
		}
		t0 := time.Now()
		s.cycle(i)
		if i >= 0 {
			cycleTimes = append(cycleTimes, time.Since(t0))
		}
	}
	smp, err := s.sample(o.cycles)
	if err != nil {
		return err
	}
	samples = append(samples, smp)
	smp.print(false)
	lo, hi := measure.MinMax(cycleTimes)
	fmt.Printf("cycle time: median %.1f s, min %.1f s, max %.1f s; libvirtd restarts %d, vmpod kills %d; failed CRI calls: %d\n",
		measure.Median(cycleTimes).Seconds(), lo.Seconds(), hi.Seconds(), s.restarts, s.kills, len(s.failures))
	for _, f := range s.failures {
		fmt.Println("  failed:", f)
	}
	printGrowth(samples)
	return nil
}

type soaker struct {
	o               options
	v               *measure.Vmpod
	g               *measure.Guest
	work            string
	restarts, kills int
	failures        []string
	// The sandboxes and containers this run made: the host objects
	// counted are theirs (other users of the machine make their own).
	sandboxes, containers []string
}

// cycle is one pod's life; faults come in at their cycles.
func (s *soaker) cycle(i int) {
	ctx := context.Background()
	rt := s.g.RT
	name := fmt.Sprintf("soak%d", i+s.o.warmup)
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: "uid-" + name},
		LogDirectory: filepath.Join(s.work, "logs", name), Annotations: map[string]string{"vmpod.dev/memory": "192Mi"},
	}
	fail := func(call string, err error) bool {
		if err != nil {
			s.failures = append(s.failures, fmt.Sprintf("cycle %d %s: %v", i, call, err))
		}
		return err != nil
	}
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if fail("RunPodSandbox", err) {
		return
	}
	s.sandboxes = append(s.sandboxes, sb.PodSandboxId)
	defer func() {
		_, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		fail("StopPodSandbox", err)
		_, err = rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		fail("RemovePodSandbox", err)
	}()
	c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "vm"}, Image: &runtimeapi.ImageSpec{Image: s.g.ImageID}, LogPath: "vm.log"}})
	if fail("CreateContainer", err) {
		return
	}
	s.containers = append(s.containers, c.ContainerId)
	if every(i, s.o.killEvery, s.o.killEvery/2) {
		s.v.Kill()
		if err := s.v.Start(); err != nil {
			s.failures = append(s.failures, fmt.Sprintf("cycle %d: vmpod does not start after kill -9: %v", i, err))
			return
		}
		s.kills++
	}
	_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
	if fail("StartContainer", err) {
		return
	}
	if every(i, s.o.restartEvery, 0) {
		if err := s.restartLibvirtd(); err != nil {
			s.failures = append(s.failures, fmt.Sprintf("cycle %d: libvirtd restart: %v", i, err))
		}
		s.restarts++
	}
	r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"true"}, Timeout: 300})
	if !fail("ExecSync", err) && r.ExitCode != 0 {
		fail("ExecSync", fmt.Errorf("true exited %d: %s", r.ExitCode, r.Stderr))
	}
	_, err = rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.ContainerId, Timeout: s.o.stopTimeout})
	fail("StopContainer", err)
	_, err = rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId})
	fail("RemoveContainer", err)
}

func every(i, n, offset int) bool { return n > 0 && i >= 0 && i%n == offset }

// libvirtdPID is the host's libvirtd, the one hack/start-libvirt.sh
// starts: by its pid file, since another libvirtd may run on the machine
// in a mount namespace of its own (the real-kubelet test's DaemonSet), and
// pidof would name both.
func libvirtdPID() (int, error) {
	b, err := os.ReadFile("/run/libvirtd.pid")
	if err != nil {
		return 0, fmt.Errorf("libvirtd's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("libvirtd's pid file: %w", err)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err != nil || ns != self {
		return 0, fmt.Errorf("libvirtd %d (from /run/libvirtd.pid) is not running in this mount namespace", pid)
	}
	return pid, nil
}

// alive says the process runs: it exists and is not a zombie (a daemon's
// parent, the machine's init, may be slow to reap it).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// restartLibvirtd stops libvirtd with SIGTERM, waits for it to go and
// starts it again with the start script.
func (s *soaker) restartLibvirtd() error {
	pid, err := libvirtdPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); alive(pid); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("libvirtd did not exit within 30 s of SIGTERM")
		}
	}
	if out, err := exec.Command(s.o.startLibvirt).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", s.o.startLibvirt, err, out)
	}
	return nil
}

// sample is what vmpod and the host hold after a number of cycles.
type sample struct {
	cycle int
	vals  []float64
}

var columns = []string{"vmpod fds", "goroutines", "threads", "RSS MiB", "libvirtd fds", "domains", "netns", "taps", "files", "metadata KiB"}

func (s *soaker) sample(cycle int) (sample, error) {
	pid := s.v.Pid()
	p, err := measure.ReadProc(pid)
	if err != nil {
		return sample{}, err
	}
	gor, err := s.goroutines()
	if err != nil {
		return sample{}, err
	}
	lfds := -1
	if lp, err := libvirtdPID(); err == nil {
		if lp, err := measure.ReadProc(lp); err == nil {
			lfds = lp.FDs
		}
	}
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").Output()
	doms := map[string]bool{}
	for _, d := range strings.Fields(string(out)) {
		doms[d] = true
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	domains, netns, taps := 0, 0, 0
	for _, id := range s.containers {
		if doms["vmpod-"+id] {
			domains++
		}
	}
	for _, id := range s.sandboxes {
		if _, err := os.Stat("/run/netns/vmpod-" + id); err == nil {
			netns++
		}
		taps += strings.Count(string(links), " vmt"+id[:10])
	}
	files := 0
	filepath.WalkDir(s.v.Dir, func(string, os.DirEntry, error) error { files++; return nil })
	var meta int64
	if st, err := os.Stat(filepath.Join(s.v.StateDir(), "metadata.db")); err == nil {
		meta = st.Size() / 1024
	}
	return sample{cycle: cycle, vals: []float64{float64(p.FDs), float64(gor), float64(p.Threads), float64(p.RSS) / 1024,
		float64(lfds), float64(domains), float64(netns), float64(taps), float64(files), float64(meta)}}, nil
}

// goroutines scrapes go_goroutines from vmpod's metrics endpoint.
func (s *soaker) goroutines() (int, error) {
	resp, err := http.Get("http://" + s.o.metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no go_goroutines on the metrics endpoint")
}

func (smp sample) print(header bool) {
	if header {
		fmt.Printf("%6s", "cycle")
		for _, c := range columns {
			fmt.Printf(" %12s", c)
		}
		fmt.Println()
	}
	fmt.Printf("%6d", smp.cycle)
	for _, v := range smp.vals {
		fmt.Printf(" %12.1f", v)
	}
	fmt.Println()
}

// printGrowth prints each column's least-squares slope per 100 cycles
// over the samples after the first (which follows the warm-up).
func printGrowth(samples []sample) {
	if len(samples) < 3 {
		fmt.Println("too few samples for a growth figure")
		return
	}
	xs := samples[1:]
	fmt.Println("growth per 100 cycles (least squares over the samples after the first):")
	for j, c := range columns {
		var sx, sy, sxx, sxy float64
		n := float64(len(xs))
		for _, smp := range xs {
			x, y := float64(smp.cycle), smp.vals[j]
			sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		}
		slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
		first, last := samples[0].vals[j], samples[len(samples)-1].vals[j]
		fmt.Printf("  %-13s %+9.2f   (first %.1f, last %.1f)\n", c, slope*100, first, last)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
