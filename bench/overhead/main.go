// Command overhead measures what one VM pod costs the host in memory beyond
// its guest RAM: QEMU's own memory and vmpod's per-VM share. That figure is
// the RuntimeClass's overhead.podFixed.memory (deploy/base/30-runtimeclass.yaml).
//
// It starts one vmpod (TCG, private socket, state directory and CNI
// bridge network), pulls the test guest from an in-process HTTP server on
// 127.0.0.1, then for each guest memory size in -memory boots -vms VM pods
// one after the other, waits for every guest's ready line and -settle more,
// and reads:
//
//   - each QEMU's proportional set size (PSS, /proc/PID/smaps_rollup: pages
//     shared between the QEMUs, such as the QEMU binary and its libraries,
//     count once in all), split by mapping (/proc/PID/smaps) into guest RAM
//     (the anonymous mapping of the guest memory size: what the guest has
//     touched), the TCG translation cache (the rwx mapping; it does not
//     exist under KVM) and the rest, which is QEMU's overhead; plus its page
//     tables (VmPTE, kernel memory that no RSS shows);
//   - vmpod's PSS before the first VM and with the VMs running: the growth
//     divided by the VM count is vmpod's per-VM share.
//
// The per-VM overhead is QEMU's rest + page tables + vmpod's share; it is
// printed per memory size, so that its independence from the guest RAM
// shows. libvirtd's and virtlogd's per-domain growth is not included
// (libvirtd is shared with other users of this machine, so its growth is
// not attributable); nor are the kernel's per-VM objects (netns, bridge,
// taps, KVM's own structures under KVM).
//
// Usage (root, libvirtd running, vmpod built, guest image built):
//
//	go build -o bin/vmpod ./cmd/vmpod
//	go run ./bench/overhead -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

const (
	imageName = "overhead-guest"
	bridge    = "vmpodovh0"
	subnet    = "10.248.0.0/16"
)

type options struct {
	vmpod, guest string
	vms          int
	memories     []int // MiB
	tbCacheMiB   int
	settle       time.Duration
	bootTimeout  time.Duration
	verbose      bool
	md           string
}

func main() {
	var o options
	var mems string
	flag.StringVar(&o.vmpod, "vmpod", "./bin/vmpod", "vmpod binary")
	flag.StringVar(&o.guest, "guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "guest image")
	flag.IntVar(&o.vms, "vms", 4, "VMs running at once per memory size")
	flag.StringVar(&mems, "memory", "192,512", "guest memory sizes in MiB, comma-separated")
	flag.IntVar(&o.tbCacheMiB, "tb-cache-mib", 256, "VMPOD_TCG_TB_CACHE_MIB (the e2e tests' value; vmpod's default is 1024)")
	flag.DurationVar(&o.settle, "settle", 10*time.Second, "wait after the last guest is ready before reading memory")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 3*time.Minute, "limit for one guest to print its ready line")
	flag.BoolVar(&o.verbose, "v", false, "print every QEMU's large mappings")
	flag.StringVar(&o.md, "md", "", "write the docs/benchmarks.md section here")
	flag.Parse()
	for _, s := range strings.Split(mems, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 64 {
			fatalf("-memory: %q is not a size in MiB of at least 64", s)
		}
		o.memories = append(o.memories, n)
	}
	for _, p := range []*string{&o.vmpod, &o.guest} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
		if _, err := os.Stat(*p); err != nil {
			fatalf("%v", err)
		}
	}
	if err := run(o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "overhead bench: "+format+"\n", args...)
	os.Exit(1)
}

// vm is one booted pod and what was measured of its QEMU.
type vm struct {
	pod, ctr, domain string
	pid              int
	pss, ram, tcg    int // KiB
	pte              int // KiB
	rest             int // pss - ram - tcg
	idleMilli        int // CPU used over the settle period, millicores
}

func run(o options) error {
	work, err := os.MkdirTemp("", "vmpodovh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o755) // QEMU (libvirt-qemu) opens the disks below it
	cniConf, cniClean, err := measure.BridgeCNI(work, bridge, bridge, subnet)
	if err != nil {
		return err
	}
	defer cniClean()
	trans := filepath.Join(work, "images.d")
	os.MkdirAll(trans, 0o755)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, o.guest) })}
	go srv.Serve(lis)
	defer srv.Close()
	rule := fmt.Sprintf("[[translations]]\nname = %q\nurl = \"http://%s/guest.qcow2\"\n", imageName, lis.Addr())
	if err := os.WriteFile(filepath.Join(trans, "bench.toml"), []byte(rule), 0o644); err != nil {
		return err
	}

	v, err := measure.StartVmpod(o.vmpod, work, "VMPOD_ACCELERATOR=tcg", "VMPOD_IMAGE_TRANSLATIONS_DIR="+trans,
		"VMPOD_CNI_CONF_DIR="+cniConf, fmt.Sprintf("VMPOD_TCG_TB_CACHE_MIB=%d", o.tbCacheMiB))
	if err != nil {
		return err
	}
	defer v.Close()
	defer removeAll(v)
	if _, err := v.CrictlOutput("pull", imageName); err != nil {
		return err
	}
	fmt.Printf("overhead benchmark: %d CPUs, load %s, %d VMs per size, guest memory %v MiB, TCG translation cache %d MiB\n",
		runtime.NumCPU(), measure.LoadAvg(), o.vms, o.memories, o.tbCacheMiB)

	type result struct {
		mem                          int
		vms                          []*vm
		vmpodIdle, vmpodBusy         int
		vmpodAnonIdle, vmpodAnonBusy int
		vmpodMilli                   int
	}
	var results []result
	for _, mem := range o.memories {
		time.Sleep(2 * time.Second)
		idle, err := measure.SmapsRollup(v.Pid())
		if err != nil {
			return err
		}
		r := result{mem: mem, vmpodIdle: idle["Pss"]}
		for i := 0; i < o.vms; i++ {
			x, err := boot(v, work, fmt.Sprintf("ovh-%d-%d", mem, i), mem, o.bootTimeout)
			if err != nil {
				return err
			}
			r.vms = append(r.vms, x)
		}
		// Idle CPU over the settle period, for information: TCG spends
		// host CPU on an idle guest's timer interrupts that KVM does not.
		cpu0 := map[int]time.Duration{v.Pid(): measure.CPUTime(v.Pid())}
		for _, x := range r.vms {
			cpu0[x.pid] = measure.CPUTime(x.pid)
		}
		time.Sleep(o.settle)
		for _, x := range r.vms {
			x.idleMilli = milliCores(measure.CPUTime(x.pid)-cpu0[x.pid], o.settle)
		}
		r.vmpodMilli = milliCores(measure.CPUTime(v.Pid())-cpu0[v.Pid()], o.settle)
		busy, err := measure.SmapsRollup(v.Pid())
		if err != nil {
			return err
		}
		r.vmpodBusy = busy["Pss"]
		r.vmpodAnonIdle, r.vmpodAnonBusy = idle["Pss_Anon"], busy["Pss_Anon"]
		fmt.Printf("\n--- guest memory %d MiB, %d VMs ---\n", mem, len(r.vms))
		for _, x := range r.vms {
			if err := x.measure(mem, o.tbCacheMiB, o.verbose); err != nil {
				return err
			}
			fmt.Printf("  %s (qemu pid %d): PSS %s = guest RAM touched %s + TCG cache %s + rest %s; page tables %s; idle CPU %dm\n",
				x.domain, x.pid, mib(x.pss), mib(x.ram), mib(x.tcg), mib(x.rest), mib(x.pte), x.idleMilli)
		}
		fmt.Printf("  vmpod PSS: %s before the VMs, %s with them (anonymous: %s, %s): %s per VM (anonymous %s); idle CPU %dm\n",
			mib(r.vmpodIdle), mib(r.vmpodBusy), mib(r.vmpodAnonIdle), mib(r.vmpodAnonBusy),
			mib((r.vmpodBusy-r.vmpodIdle)/len(r.vms)), mib((r.vmpodAnonBusy-r.vmpodAnonIdle)/len(r.vms)), r.vmpodMilli)
		results = append(results, r)
		removeAll(v)
	}

	sec := measure.NewSection("overhead", o.vmpod, o.vms)
	sec.Printf("One vmpod (TCG, `tcg_tb_cache_mib = %d`) runs %d test-guest VMs at once per guest memory size; %s after the last guest is ready the benchmark reads each QEMU's PSS split by mapping, its page tables, and vmpod's PSS growth. Medians over the VMs of each size; MiB = 1024 KiB.\n\n",
		o.tbCacheMiB, o.vms, o.settle)
	var rows [][]string
	fmt.Println("\n==================== per-VM host memory overhead ====================")
	fmt.Println("guest MiB | QEMU PSS | guest RAM touched | TCG cache | QEMU rest | page tables | vmpod share | overhead (rest+PT+vmpod) | with TCG cache | QEMU idle CPU")
	for _, r := range results {
		var pss, ram, tcg, rest, pte, cpu []int
		for _, x := range r.vms {
			pss, ram, tcg = append(pss, x.pss), append(ram, x.ram), append(tcg, x.tcg)
			rest, pte, cpu = append(rest, x.rest), append(pte, x.pte), append(cpu, x.idleMilli)
		}
		// vmpod's growth is within its garbage collector's noise; the
		// larger of the PSS and anonymous-PSS growth, at least 0.
		share := max((r.vmpodBusy-r.vmpodIdle)/len(r.vms), (r.vmpodAnonBusy-r.vmpodAnonIdle)/len(r.vms), 0)
		ovh := measure.Median(rest) + measure.Median(pte) + share
		fmt.Printf("%9d | %8s | %17s | %9s | %9s | %11s | %11s | %24s | %14s | %dm\n", r.mem,
			mib(measure.Median(pss)), mib(measure.Median(ram)), mib(measure.Median(tcg)),
			mib(measure.Median(rest)), mib(measure.Median(pte)), mib(share), mib(ovh), mib(ovh+measure.Median(tcg)),
			measure.Median(cpu))
		rows = append(rows, []string{fmt.Sprintf("%d MiB", r.mem), mib(measure.Median(pss)), mib(measure.Median(ram)), mib(measure.Median(tcg)),
			measure.Spread(rest, mib), mib(measure.Median(pte)), mib(share), "**" + mib(ovh) + "**", mib(ovh + measure.Median(tcg)), fmt.Sprintf("%dm", measure.Median(cpu))})
	}
	sec.Table([]string{"guest RAM", "QEMU PSS", "guest RAM touched", "TCG cache", "QEMU rest (spread)", "page tables", "vmpod share", "overhead", "with the TCG cache", "idle QEMU CPU"}, rows)
	sec.Printf("Load average at the end: %s.\n", measure.LoadAvg())
	if err := sec.Write(o.md); err != nil {
		return err
	}
	fmt.Println("(medians over the VMs of each size; PSS from /proc/PID/smaps_rollup; MiB = 1024 KiB)")
	fmt.Printf("load average at end: %s\n", measure.LoadAvg())
	return nil
}

// boot runs one VM pod with the given guest memory and waits for its ready
// line.
func boot(v *measure.Vmpod, work, name string, memMiB int, timeout time.Duration) (*vm, error) {
	logDir := filepath.Join(work, "pods", name)
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "bench", "uid": "uid-" + name},
		"log_directory": logDir,
		"annotations":   map[string]string{"vmpod.dev/memory": fmt.Sprintf("%dMi", memMiB)},
	}
	ctr := map[string]any{"metadata": map[string]any{"name": "vm"}, "image": map[string]any{"image": imageName}, "log_path": "vm.log"}
	podPath, ctrPath := filepath.Join(work, name+"-pod.json"), filepath.Join(work, name+"-ctr.json")
	for p, x := range map[string]any{podPath: pod, ctrPath: ctr} {
		b, _ := json.Marshal(x)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
	}
	x := &vm{}
	out, err := v.CrictlOutput("runp", podPath)
	if err != nil {
		return nil, err
	}
	x.pod = strings.TrimSpace(out)
	if out, err = v.CrictlOutput("create", x.pod, ctrPath, podPath); err != nil {
		return nil, err
	}
	x.ctr = strings.TrimSpace(out)
	if _, err := v.CrictlOutput("start", x.ctr); err != nil {
		return nil, err
	}
	out, err = v.CrictlOutput("inspect", x.ctr)
	if err != nil {
		return nil, err
	}
	var ci struct{ Info struct{ Domain string } }
	if err := json.Unmarshal([]byte(out), &ci); err != nil || ci.Info.Domain == "" {
		return nil, fmt.Errorf("crictl inspect %s: no domain (%v)", x.ctr, err)
	}
	x.domain = ci.Info.Domain
	pidb, err := os.ReadFile("/run/libvirt/qemu/" + x.domain + ".pid")
	if err != nil {
		return nil, err
	}
	if x.pid, err = strconv.Atoi(strings.TrimSpace(string(pidb))); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, "vm.log")
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "vmpod-test-guest ready") {
			return x, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: no ready line within %v", name, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var mappingRE = regexp.MustCompile(`^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$`)

// measure reads the QEMU's smaps: the guest RAM mapping is the anonymous
// one of at least the guest's size (QEMU adds alignment, so up to 16 MiB
// more); the TCG translation cache is the anonymous rwx mapping of at
// least the configured size (less a guard page).
func (x *vm) measure(memMiB, tbMiB int, verbose bool) error {
	roll, err := measure.SmapsRollup(x.pid)
	if err != nil {
		return err
	}
	x.pss = roll["Pss"]
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", x.pid))
	if err != nil {
		return err
	}
	defer f.Close()
	type mapping struct {
		perms, name    string
		size, rss, pss int
	}
	var maps []*mapping
	var cur *mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if m := mappingRE.FindStringSubmatch(l); m != nil {
			cur = &mapping{perms: m[1], name: m[2]}
			maps = append(maps, cur)
			continue
		}
		fs := strings.Fields(l)
		if cur == nil || len(fs) < 2 {
			continue
		}
		n, _ := strconv.Atoi(fs[1])
		switch fs[0] {
		case "Size:":
			cur.size = n
		case "Rss:":
			cur.rss = n
		case "Pss:":
			cur.pss = n
		}
	}
	var ram, tcg *mapping
	for _, m := range maps {
		anon := m.name == "" || strings.HasPrefix(m.name, "/memfd:")
		switch {
		case anon && m.perms == "rwxp" && m.size >= tbMiB<<10-64 && tcg == nil: // QEMU keeps a guard page
			tcg = m
		case anon && strings.HasPrefix(m.perms, "rw") && m.size >= memMiB<<10 && m.size <= (memMiB+16)<<10 && ram == nil:
			ram = m
		}
	}
	if ram == nil {
		return fmt.Errorf("%s: no anonymous mapping of %d MiB (the guest RAM) in /proc/%d/smaps", x.domain, memMiB, x.pid)
	}
	x.ram = ram.pss
	if tcg != nil {
		x.tcg = tcg.pss
	}
	x.rest = x.pss - x.ram - x.tcg
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", x.pid)); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmPTE:" {
				x.pte, _ = strconv.Atoi(f[1])
			}
		}
	}
	if verbose {
		sort.Slice(maps, func(i, j int) bool { return maps[i].pss > maps[j].pss })
		for _, m := range maps[:min(12, len(maps))] {
			fmt.Printf("    %s %-60s size %8d kB rss %8d kB pss %8d kB\n", m.perms, m.name, m.size, m.rss, m.pss)
		}
	}
	return nil
}

// removeAll stops and removes every pod of the daemon.
func removeAll(v *measure.Vmpod) {
	out, _ := v.CrictlOutput("pods", "-q")
	for _, id := range strings.Fields(out) {
		v.CrictlOutput("stopp", id)
		v.CrictlOutput("rmp", id)
	}
}

// milliCores turns CPU time used over d into millicores.
func milliCores(cpu time.Duration, d time.Duration) int {
	return int(float64(cpu/time.Millisecond) / d.Seconds())
}

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
