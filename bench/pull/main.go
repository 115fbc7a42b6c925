// Command pull benchmarks vmpod's HTTP image pull against curl.
//
// It makes a 1 GiB qcow2 of incompressible data (cached in a work dir),
// serves it from an in-process Go HTTP server on 127.0.0.1 (sendfile), and
// in the same run alternates `curl -o` of the file (and `curl -o` followed
// by an fsync of the file, the durable baseline) with `crictl pull`
// through a freshly started vmpod (empty image store each time). It prints
// each time, the medians, the ratio vmpod/curl (target: at most 1.15), and
// vmpod's RSS after the pull (target: under 40 MiB).
//
// Usage (root, libvirtd running, vmpod and crictl built):
//
//	go run ./bench/pull -vmpod ./bin/vmpod -runs 3
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

func main() {
	vmpod := flag.String("vmpod", "./bin/vmpod", "vmpod binary")
	work := flag.String("work", "/var/tmp/vmpod-bench-pull", "work dir (the 1 GiB image is cached here)")
	runs := flag.Int("runs", 3, "runs of each")
	sizeMiB := flag.Int("size-mib", 1024, "image size in MiB")
	flag.Parse()
	img, err := measure.RandomQcow2(*work, *sizeMiB)
	must(err)
	st, _ := os.Stat(img)
	fmt.Printf("image: %s, %d bytes\n", img, st.Size())

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(*work))}
	go srv.Serve(lis)
	defer srv.Close()
	url := "http://" + lis.Addr().String() + "/" + filepath.Base(img)

	var curlT, curlSyncT, vmpodT []time.Duration
	var rss, hwm []int
	for i := 0; i < *runs; i++ {
		// Flush dirty pages first so neither side pays for the other's
		// writeback.
		exec.Command("sync").Run()
		curlT = append(curlT, timeCurl(url, *work, false))
		exec.Command("sync").Run()
		curlSyncT = append(curlSyncT, timeCurl(url, *work, true))
		exec.Command("sync").Run()
		t, r, h := timeVmpod(*vmpod, url, *work)
		vmpodT = append(vmpodT, t)
		rss, hwm = append(rss, r), append(hwm, h)
		fmt.Printf("run %d: curl %.2fs  curl+fsync %.2fs  vmpod %.2fs  vmpod RSS after pull %d KiB (peak %d KiB)\n",
			i+1, curlT[i].Seconds(), curlSyncT[i].Seconds(), t.Seconds(), r, h)
	}
	mc, mv := measure.Median(curlT), measure.Median(vmpodT)
	fmt.Printf("\nmedian over %d runs: curl -o %.2fs (%.0f MiB/s), vmpod pull %.2fs (%.0f MiB/s), ratio vmpod/curl %.2f (target <= 1.15)\n",
		*runs, mc.Seconds(), float64(st.Size())/(1<<20)/mc.Seconds(), mv.Seconds(), float64(st.Size())/(1<<20)/mv.Seconds(), mv.Seconds()/mc.Seconds())
	ms := measure.Median(curlSyncT)
	fmt.Printf("durable baseline: curl -o + fsync of the file %.2fs, ratio vmpod/(curl+fsync) %.2f (vmpod fsyncs before it records an image)\n",
		ms.Seconds(), mv.Seconds()/ms.Seconds())
	fmt.Printf("vmpod RSS after pull: median %d KiB (%.1f MiB), peak during pull %.1f MiB (target < 40 MiB)\n",
		measure.Median(rss), float64(measure.Median(rss))/1024, float64(measure.Median(hwm))/1024)
}

// timeCurl times `curl -o` of url; with durable it also fsyncs the file
// (coreutils `sync FILE`), as vmpod does before recording an image.
func timeCurl(url, work string, durable bool) time.Duration {
	out := filepath.Join(work, "curl.out")
	defer os.Remove(out)
	start := time.Now()
	must(exec.Command("curl", "-sSf", "-o", out, url).Run())
	if durable {
		must(exec.Command("sync", out).Run())
	}
	return time.Since(start)
}

// timeVmpod starts vmpod on an empty state dir, times `crictl pull`, reads
// vmpod's RSS, and stops it.
func timeVmpod(bin, url, work string) (time.Duration, int, int) {
	tr := filepath.Join(work, "bench-images.d")
	must(os.MkdirAll(tr, 0o755))
	must(os.WriteFile(filepath.Join(tr, "bench.toml"), []byte(fmt.Sprintf("[[translations]]\nname = \"bench\"\nurl = %q\n", url)), 0o644))
	v, err := measure.StartVmpod(bin, work, "VMPOD_IMAGE_TRANSLATIONS_DIR="+tr)
	must(err)
	defer v.Close()
	idle, _ := measure.ReadProc(v.Pid())
	fmt.Printf("  vmpod RSS before pull %d KiB\n", idle.RSS)
	start := time.Now()
	must(v.Crictl("pull", "bench"))
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
