// Command pull benchmarks vmpod's HTTP image pull against a shell
// pipeline that does the same work: download the file, write it, hash it
// and make it durable.
//
// It makes a 1 GiB qcow2 of incompressible data (cached in a work dir),
// serves it from an in-process Go HTTP server on 127.0.0.1 (sendfile), and
// in the same run alternates (the order rotating from run to run, `sync`
// before each):
//
//   - `curl -s URL | tee FILE | sha256sum` then `sync FILE` (an fsync of
//     the file), timed as a whole (bash -o pipefail): the baseline. vmpod
//     too hashes what it receives, writes it and fsyncs the file before it
//     records the image.
//   - the same pipeline with `openssl dgst -sha256` as the hasher: GNU
//     sha256sum (coreutils 9.1) does not use the CPU's SHA instructions and
//     hashes at about 350 MiB/s, slower than the network and the disk here;
//     openssl does, as Go's crypto/sha256 does.
//   - `curl -o FILE`, for reference: no hash and no fsync, so 1 GiB of
//     dirty pages left in the page cache.
//   - `crictl pull` through a freshly started vmpod (empty image store
//     each time), and with -old the same for another build.
//
// It prints each time, then per contender the median and the spread, the
// ratio of the medians vmpod / baseline (target: at most 1.15), and vmpod's
// RSS after the pull. -md writes the results as docs/benchmarks.md's
// "pull" section.
//
// Usage (root, libvirtd running, vmpod and crictl built):
//
//	go run ./bench/pull -vmpod ./bin/vmpod -runs 5 [-old /tmp/vmpod-old] [-md pull.md]
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
	"strings"
	"time"

	"github.com/vmpod/vmpod/bench/internal/measure"
)

func main() {
	vmpod := flag.String("vmpod", "./bin/vmpod", "vmpod binary")
	oldBin := flag.String("old", "", "another vmpod build to measure in the same runs (e.g. the one before a change)")
	work := flag.String("work", "/var/tmp/vmpod-bench-pull", "work dir (the 1 GiB image is cached here)")
	runs := flag.Int("runs", 5, "runs of each")
	sizeMiB := flag.Int("size-mib", 1024, "image size in MiB")
	// bench/run passes every benchmark the test guest; a pull needs none.
	flag.String("guest", "", "ignored (bench/run passes it to every benchmark)")
	md := flag.String("md", "", "write the results as markdown (docs/benchmarks.md's pull section) to this file")
	flag.Parse()
	img, err := measure.RandomQcow2(*work, *sizeMiB)
	must(err)
	st, _ := os.Stat(img)
	sum, err := measure.FileDigest(img)
	must(err)
	fmt.Printf("image: %s, %d bytes, sha256 %s\n", img, st.Size(), sum)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := &http.Server{Handler: http.FileServer(http.Dir(*work))}
	go srv.Serve(lis)
	defer srv.Close()
	url := "http://" + lis.Addr().String() + "/" + filepath.Base(img)
	out := filepath.Join(*work, "curl.out")
	sumFile := filepath.Join(*work, "curl.sum")

	pipeline := func(hasher string) func() time.Duration {
		return func() time.Duration {
			defer os.Remove(out)
			d, err := measure.Pipeline(fmt.Sprintf("curl -sSf %s | tee %s | %s >%s; sync %s", url, out, hasher, sumFile, out))
			must(err)
			got, _ := os.ReadFile(sumFile)
			if !strings.Contains(string(got), sum) {
				log.Fatalf("%s printed %q, want %s", hasher, got, sum)
			}
			return d
		}
	}
	cs := []*measure.Contender{
		{Name: "`curl -s URL \\| tee FILE \\| sha256sum`, `sync FILE`", Short: "curl|tee|sha256sum", Run: pipeline("sha256sum")},
		{Name: "`curl -s URL \\| tee FILE \\| openssl dgst -sha256`, `sync FILE`", Short: "curl|tee|openssl", Run: pipeline("openssl dgst -sha256")},
		{Name: "`curl -o FILE` (no hash, no fsync)", Short: "curl-o", Run: func() time.Duration {
			defer os.Remove(out)
			d, err := measure.Pipeline(fmt.Sprintf("curl -sSf -o %s %s", out, url))
			must(err)
			return d
		}},
	}
	vm := &measure.Contender{Name: "vmpod `crictl pull`", Short: "vmpod"}
	vm.Run = func() time.Duration { return timeVmpod(vm, *vmpod, url, *work) }
	cs = append(cs, vm)
	var old *measure.Contender
	if *oldBin != "" {
		old = &measure.Contender{Name: "vmpod `crictl pull`, -old build " + measure.BuildID(*oldBin), Short: "old"}
		old.Run = func() time.Duration { return timeVmpod(old, *oldBin, url, *work) }
		cs = append(cs, old)
	}

	sec := measure.NewSection("pull", *vmpod, *runs)
	// Dirty pages are flushed before each run, so that no one pays for
	// another's writeback.
	measure.Interleave(cs, *runs, func() { exec.Command("sync").Run() })

	mib := float64(st.Size()) / (1 << 20)
	secs := func(d time.Duration) string { return measure.Secs(d) }
	var rows [][]string
	for _, c := range cs {
		m := measure.Median(c.Times)
		rows = append(rows, []string{c.Name, measure.Spread(c.Times, secs), fmt.Sprintf("%.0f MiB/s", mib/m.Seconds())})
	}
	sec.Printf("A %d MiB qcow2 of random data (%d bytes) served by an in-process Go HTTP server on 127.0.0.1 (sendfile); "+
		"`sync` before each, the order rotating from run to run; vmpod starts on an empty store each time.\n\n", *sizeMiB, st.Size())
	sec.Table([]string{"", fmt.Sprintf("median (spread) of %d", *runs), "rate"}, rows)
	mv := measure.Median(vm.Times)
	target := "met"
	if r := mv.Seconds() / measure.Median(cs[0].Times).Seconds(); r > 1.15 {
		target = "**not met**"
	}
	rrows := [][]string{
		{"vmpod / (curl \\| tee \\| sha256sum + fsync)", measure.Ratio(cs[0], vm) + ", target ≤ 1.15: " + target},
		{"vmpod / (curl \\| tee \\| openssl + fsync)", measure.Ratio(cs[1], vm)},
		{"vmpod / `curl -o`", measure.Ratio(cs[2], vm)},
	}
	if old != nil {
		rrows = append(rrows, []string{"vmpod / -old build", measure.Ratio(old, vm)})
	}
	sec.Table([]string{"ratio of the medians", ""}, rrows)
	sec.Printf("vmpod's RSS after the pull (median): %s.\n", vm.Mem())
	if old != nil {
		sec.Printf("The -old build's: %s.\n", old.Mem())
	}
	fmt.Print("\n" + sec.String())
	must(sec.Write(*md))
}

// timeVmpod starts bin on an empty state dir, times `crictl pull`, reads
// vmpod's RSS into c, and stops it.
func timeVmpod(c *measure.Contender, bin, url, work string) time.Duration {
	tr := filepath.Join(work, "bench-images.d")
	must(os.MkdirAll(tr, 0o755))
	must(os.WriteFile(filepath.Join(tr, "bench.toml"), []byte(fmt.Sprintf("[[translations]]\nname = \"bench\"\nurl = %q\n", url)), 0o644))
	v, err := measure.StartVmpod(bin, work, "VMPOD_IMAGE_TRANSLATIONS_DIR="+tr)
	must(err)
	defer v.Close()
	start := time.Now()
	must(v.Crictl("pull", "bench"))
	d := time.Since(start)
	must(c.RecordProc(v.Pid()))
	return d
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
