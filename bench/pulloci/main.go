// Command pulloci benchmarks vmpod's containerDisk pull from an OCI
// registry against `skopeo copy docker://… dir:` of the same image.
//
// It packs a qcow2 of incompressible data (1 GiB by default, made once and
// cached; the same file bench/pull uses) as a containerDisk, pushes it to
// Debian's docker-registry on 127.0.0.1 (tests/e2e/registry scripts), then
// alternates, in the same run, skopeo copy to a dir: and `crictl pull`
// through a freshly started vmpod. It prints each time, the medians, the
// ratio (target: at most 1.2) and vmpod's RSS after the pull (target: under
// 60 MiB). Note that skopeo copies the compressed layer as is, while vmpod
// also decompresses it into the disk file: use -compress none to compare
// transfer alone.
//
// Usage (root, libvirtd running, run from the repository root):
//
//	go run ./bench/pulloci -vmpod ./bin/vmpod -runs 3
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

func main() {
	vmpod := flag.String("vmpod", "./bin/vmpod", "vmpod binary")
	work := flag.String("work", "/var/tmp/vmpod-bench-pull", "work dir (the image is cached here)")
	runs := flag.Int("runs", 3, "runs of each")
	sizeMiB := flag.Int("size-mib", 1024, "disk size in MiB")
	compress := flag.String("compress", "gzip", "layer compression: gzip or none")
	flag.Parse()
	disk, err := measure.RandomQcow2(*work, *sizeMiB)
	must(err)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	regDir := filepath.Join(*work, "registry")
	os.RemoveAll(regDir)
	start := exec.Command("tests/e2e/registry/start-registry.sh", fmt.Sprint(port))
	start.Env = append(os.Environ(), "REGISTRY_DIR="+regDir)
	start.Stderr = os.Stderr
	must(start.Run())
	defer exec.Command("tests/e2e/registry/stop-registry.sh", regDir, "--purge").Run()
	ref := fmt.Sprintf("127.0.0.1:%d/bench/disk:1", port)
	fmt.Printf("pushing %s (%s layer)...\n", ref, *compress)
	push := exec.Command("tests/e2e/registry/push-containerdisk.sh", disk, ref)
	push.Env = append(os.Environ(), "COMPRESS="+*compress)
	push.Stderr = os.Stderr
	must(push.Run())
	conf := filepath.Join(*work, "registries.conf")
	must(os.WriteFile(conf, []byte(fmt.Sprintf("[[registry]]\nlocation = \"127.0.0.1:%d\"\ninsecure = true\n", port)), 0o644))

	var skT, vmT []time.Duration
	var rss, hwm []int
	for i := 0; i < *runs; i++ {
		exec.Command("sync").Run()
		skT = append(skT, timeSkopeo(ref, *work))
		exec.Command("sync").Run()
		t, r, h := timeVmpod(*vmpod, ref, conf, *work)
		vmT, rss, hwm = append(vmT, t), append(rss, r), append(hwm, h)
		fmt.Printf("run %d: skopeo copy %.2fs  vmpod pull %.2fs  vmpod RSS after pull %d KiB (peak %d KiB)\n",
			i+1, skT[i].Seconds(), t.Seconds(), r, h)
	}
	ms, mv := measure.Median(skT), measure.Median(vmT)
	fmt.Printf("\nmedian over %d runs (%s layer): skopeo copy docker:// dir: %.2fs, vmpod pull %.2fs, ratio vmpod/skopeo %.2f (target <= 1.2)\n",
		*runs, *compress, ms.Seconds(), mv.Seconds(), mv.Seconds()/ms.Seconds())
	fmt.Printf("vmpod RSS after pull: median %.1f MiB, peak during pull %.1f MiB (target < 60 MiB)\n",
		float64(measure.Median(rss))/1024, float64(measure.Median(hwm))/1024)
}

func timeSkopeo(ref, work string) time.Duration {
	dir := filepath.Join(work, "skopeo-dir")
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	start := time.Now()
	out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "docker://"+ref, "dir:"+dir).CombinedOutput()
	if err != nil {
		log.Fatalf("skopeo: %v\n%s", err, out)
	}
	return time.Since(start)
}

func timeVmpod(bin, ref, conf, work string) (time.Duration, int, int) {
	v, err := measure.StartVmpod(bin, work, "VMPOD_REGISTRIES_CONF="+conf, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/none")
	must(err)
	defer v.Close()
	start := time.Now()
	must(v.Crictl("pull", ref))
	d := time.Since(start)
	p, err := measure.ReadProc(v.Pid())
	must(err)
	return d, p.RSS, p.HWM
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
