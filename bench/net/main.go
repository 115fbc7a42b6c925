// Command net benchmarks vmpod's pod networking on the real CNI bridge,
// host-local and portmap plugins (Debian's containernetworking-plugins), on
// a private subnet on a bridge it creates (10.253.0.0/16, vmpodbench0).
//
//  1. Setup and teardown per pod, in-process through pkg/cni exactly as
//     vmpod calls it: Plan + Setup (netns, CNI ADD, in-netns bridge wiring)
//     and PrepareVM + PlugVM (a tap made, moved into the netns and bridged,
//     the DHCP server started), then Teardown (DHCP, taps, CNI DEL, netns).
//     vmpod's own time is reported apart from the CNI plugins' time (the
//     baseline it is compared with); target: vmpod's own time under 100 ms
//     for setup and for teardown.
//  2. Resume to ping: a vmpod (TCG) boots the test guest -runs times; the
//     time from StartContainer's return (the guest was resumed just before)
//     to the first ICMP echo reply from the pod IP. The guest's kernel boot
//     and its DHCP client are most of it; the ready line's time is printed
//     beside it for comparison.
//
// Usage (root, libvirtd running, vmpod built, guest image built):
//
//	go build -o bin/vmpod ./cmd/vmpod
//	go run ./bench/net -vmpod ./bin/vmpod -guest tests/e2e/images/out/vmpod-test-guest.qcow2
//
// A benchmark reports: it never fails because a target is missed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/bench/internal/measure"
	"github.com/vmpod/vmpod/pkg/cni"
)

const (
	netName = "vmpod-bench"
	bridge  = "vmpodbench0"
	subnet  = "10.253.0.0/16"
)

func main() {
	vmpodBin := flag.String("vmpod", "bin/vmpod", "vmpod binary")
	guest := flag.String("guest", "tests/e2e/images/out/vmpod-test-guest.qcow2", "test guest image")
	pods := flag.Int("pods", 20, "pods for the setup/teardown part")
	runs := flag.Int("runs", 5, "VM boots for the resume-to-ping part")
	pluginDir := flag.String("cni-bin", "/usr/lib/cni", "CNI plugin directory")
	md := flag.String("md", "", "write the docs/benchmarks.md section here")
	flag.Parse()
	sec = measure.NewSection("net", *vmpodBin, *pods)
	work, err := os.MkdirTemp("", "vmpod-bench-net-")
	check(err)
	os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	confDir, cleanup, err := measure.BridgeCNI(work, netName, bridge, subnet)
	check(err)
	defer cleanup()

	setupTeardown(confDir, *pluginDir, filepath.Join(work, "cache"), *pods)
	resumeToPing(*vmpodBin, *guest, work, confDir, *pluginDir, *runs)
	check(sec.Write(*md))
}

// sec is the docs/benchmarks.md section both parts fill.
var sec *measure.Section

func spread(d []time.Duration) string { return measure.Spread(d, ms) }

func setupTeardown(confDir, pluginDir, cacheDir string, n int) {
	m := cni.NewManager(cni.Config{ConfDir: confDir, BinDirs: []string{pluginDir}, CacheDir: cacheDir},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	var ownSetup, cniAdd, plug, ownTeardown, cniDel []time.Duration
	ctx := context.Background()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%064x", 0xbe0000+i)
		att, err := m.Plan(id, cni.PodInfo{Namespace: "bench", Name: fmt.Sprintf("p%d", i), UID: fmt.Sprintf("u%d", i),
			PortMappings: []cni.PortMapping{{HostPort: int32(30000 + i), ContainerPort: 8080, Protocol: "tcp", HostIP: "127.0.0.1"}}})
		check(err)
		check(m.Setup(ctx, att, nil))
		st := m.LastTiming("setup")
		t0 := time.Now()
		check(m.PrepareVM(att))
		check(m.PlugVM(att, cni.Guest{Hostname: "p"}))
		plug = append(plug, time.Since(t0))
		check(m.Teardown(ctx, att))
		td := m.LastTiming("teardown")
		if left := cni.LeakCheck(att); len(left) > 0 {
			fmt.Println("LEFT BEHIND:", left)
		}
		ownSetup, cniAdd = append(ownSetup, st.Own), append(cniAdd, st.Plugins)
		ownTeardown, cniDel = append(ownTeardown, td.Own), append(cniDel, td.Plugins)
	}
	fmt.Printf("== network setup/teardown per pod, %d pods (bridge + host-local + portmap), median [max]\n", n)
	row := func(name string, d []time.Duration, target string) {
		_, hi := measure.MinMax(d)
		fmt.Printf("%-44s %8s [%s]%s\n", name, ms(measure.Median(d)), ms(hi), target)
	}
	row("vmpod setup (netns + wiring), own time", ownSetup, "   target < 100 ms")
	row("  + per boot: taps + plug + DHCP start", plug, "")
	row("vmpod own setup incl. one boot", addAll(ownSetup, plug), "   target < 100 ms")
	row("CNI ADD (plugins, baseline)", cniAdd, "")
	row("vmpod teardown (DHCP, taps, netns), own time", ownTeardown, "   target < 100 ms")
	row("CNI DEL (plugins, baseline)", cniDel, "")
	target := func(d []time.Duration) string {
		if measure.Median(d) < 100*time.Millisecond {
			return "target < 100 ms: met"
		}
		return "target < 100 ms: **not met**"
	}
	sec.Printf("Part 1: `pkg/cni` in-process as vmpod calls it, Debian's `bridge` + `host-local` + `portmap` plugins on a private bridge, %d pods one after the other, each with a hostPort; vmpod's own time apart from the plugins' (the baseline).\n\n", n)
	sec.Table([]string{"per pod", "median (spread)", "target"}, [][]string{
		{"vmpod setup: netns + wiring into the in-netns bridge", spread(ownSetup), ""},
		{"per VM boot: tap, plug, DHCP server, anti-spoofing rules", spread(plug), ""},
		{"vmpod's own setup including one boot", spread(addAll(ownSetup, plug)), target(addAll(ownSetup, plug))},
		{"CNI ADD (plugins; baseline)", spread(cniAdd), ""},
		{"vmpod teardown", spread(ownTeardown), target(ownTeardown)},
		{"CNI DEL (plugins; baseline)", spread(cniDel), ""},
	})
}

func resumeToPing(bin, guest, work, confDir, pluginDir string, runs int) {
	v, err := measure.StartVmpod(bin, work, "VMPOD_ACCELERATOR=tcg", "VMPOD_TCG_TB_CACHE_MIB=256",
		"VMPOD_CNI_CONF_DIR="+confDir, "VMPOD_CNI_BIN_DIRS="+pluginDir, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/images.d")
	check(err)
	defer v.Close()
	g, err := measure.PullGuest(v, guest)
	check(err)
	defer g.Close()
	rt, imgID, ctx := g.RT, g.ImageID, context.Background()
	var toPing, toReady []time.Duration
	for i := 0; i < runs; i++ {
		logDir := filepath.Join(work, fmt.Sprintf("logs%d", i))
		pod := &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("ping%d", i), Namespace: "bench", Uid: fmt.Sprintf("uid-ping%d", i)},
			LogDirectory: logDir,
		}
		sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		check(err)
		st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId})
		check(err)
		ip := st.Status.Network.Ip
		c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: pod,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "vm"}, Image: &runtimeapi.ImageSpec{Image: imgID}, LogPath: "vm.log"}})
		check(err)
		_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
		check(err)
		resumed := time.Now()
		var pinged, ready time.Duration
		for deadline := resumed.Add(3 * time.Minute); time.Now().Before(deadline) && (pinged == 0 || ready == 0); {
			if pinged == 0 && exec.Command("ping", "-c", "1", "-W", "0.2", ip).Run() == nil {
				pinged = time.Since(resumed)
			}
			if ready == 0 {
				if b, _ := os.ReadFile(filepath.Join(logDir, "vm.log")); strings.Contains(string(b), "vmpod-test-guest ready") {
					ready = time.Since(resumed)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Printf("run %d: pod %s: ready line %s, first ping reply %s after resume\n", i, ip, ms(ready), ms(pinged))
		toPing, toReady = append(toPing, pinged), append(toReady, ready)
		_, err = rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		check(err)
		_, err = rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		check(err)
	}
	fmt.Printf("== resume to ping, %d boots under TCG, median: first ping reply %s, guest ready line %s\n", runs, ms(measure.Median(toPing)), ms(measure.Median(toReady)))
	sec.Printf("Part 2: %d boots of the test guest through vmpod (TCG), pinging the pod IP every 20 ms from StartContainer's return (the guest was resumed just before).\n\n", runs)
	sec.Table([]string{"after resume", "median (spread)"}, [][]string{
		{"the guest's ready line", spread(toReady)},
		{"first ping reply", spread(toPing)},
	})
}

func addAll(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/net:", err)
		os.Exit(1)
	}
}
