// Command pulloci benchmarks vmpod's containerDisk pull from an OCI
// registry against a shell pipeline that does the same work: fetch the
// layer, check its digest, decompress it, check the uncompressed
// stream's digest (the config's diff_id), unpack the disk file from the
// tar, hash it and make it durable.
//
// It makes a qcow2 of compressible data (1 GiB by default, made once and
// cached: measure.MixedQcow2, which gzip compresses to about 55%), packs
// it as a containerDisk (one gzip layer, tests/e2e/registry scripts),
// pushes it to Debian's docker-registry on 127.0.0.1, and alternates in
// the same run (the order rotating from run to run, `sync` before each):
//
//   - the baseline, a bash pipeline (-o pipefail) timed as a whole: curl
//     of the manifest and the config, then curl of the layer blob | tee
//     to a hasher | gzip -dc | tee to a hasher | tar -xO of the disk |
//     tee FILE | hasher, the three digests compared with the manifest's,
//     the config's diff_id and the disk's, and `sync FILE`. That is what
//     vmpod does for a pull: it verifies the blob against its digest and
//     the uncompressed stream against the diff_id, stores the disk under
//     its own digest and fsyncs it; it keeps no copy of the compressed
//     blob. Once with GNU sha256sum as the hasher and once with `openssl
//     dgst -sha256` (sha256sum does not use the CPU's SHA instructions,
//     Go and openssl do).
//   - `skopeo copy docker://… dir:`, for reference: it fetches and
//     verifies the compressed blob and writes it as is, without
//     decompressing, unpacking or fsyncing.
//   - `crictl pull` through a freshly started vmpod (empty image store
//     each time), and with -old the same for another build.
//
// It prints each time, then per contender the median and the spread, the
// ratio of the medians vmpod / baseline (target: at most 1) and vmpod's
// RSS after the pull. -md writes the results as docs/benchmarks.md's
// "pulloci" section.
//
// Usage (root, libvirtd running, run from the repository root):
//
//	go run ./bench/pulloci -vmpod ./bin/vmpod -runs 5 [-old /tmp/vmpod-old] [-md pulloci.md]
package main

import (
	"encoding/json"
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
	work := flag.String("work", "/var/tmp/vmpod-bench-pull", "work dir (the image is cached here)")
	runs := flag.Int("runs", 5, "runs of each")
	sizeMiB := flag.Int("size-mib", 1024, "disk size in MiB")
	compress := flag.String("compress", "gzip", "layer compression: gzip or none")
	skopeo := flag.Bool("skopeo", true, "also time skopeo copy to a dir: (transfer only, for reference)")
	// bench/run passes every benchmark the test guest; a pull needs none.
	flag.String("guest", "", "ignored (bench/run passes it to every benchmark)")
	md := flag.String("md", "", "write the results as markdown (docs/benchmarks.md's pulloci section) to this file")
	flag.Parse()
	disk, err := measure.MixedQcow2(*work, *sizeMiB)
	must(err)
	st, err := os.Stat(disk)
	must(err)
	diskSum, err := measure.FileDigest(disk)
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
	img := inspect(port)
	fmt.Printf("disk %d bytes (sha256 %s), layer %d bytes (%.0f%% of the disk), diff_id %s\n",
		st.Size(), diskSum, img.layerSize, 100*float64(img.layerSize)/float64(st.Size()), img.diffID)

	unpack := func(hasher string) func() time.Duration {
		return func() time.Duration {
			d := filepath.Join(*work, "unpack")
			os.RemoveAll(d)
			defer os.RemoveAll(d)
			must(os.MkdirAll(d, 0o755))
			dec := "gzip -dc"
			if *compress == "none" {
				dec = "cat"
			}
			reg := fmt.Sprintf("http://127.0.0.1:%d/v2/bench/disk", port)
			script := fmt.Sprintf(`cd %[1]s
curl -sSf -H 'Accept: application/vnd.oci.image.manifest.v1+json' %[2]s/manifests/1 >manifest
curl -sSf %[2]s/blobs/%[3]s >config
mkfifo blob.pipe tar.pipe
%[4]s <blob.pipe >blob.sum &
%[4]s <tar.pipe >tar.sum &
curl -sSf %[2]s/blobs/%[5]s | tee blob.pipe | %[6]s | tee tar.pipe | tar -xOf - disk/%[7]s | tee disk.qcow2 | %[4]s >disk.sum
wait
grep -q %[8]s blob.sum
grep -q %[9]s tar.sum
grep -q %[10]s disk.sum
sync disk.qcow2`, d, reg, img.config, hasher, img.layer, dec, filepath.Base(disk),
				strings.TrimPrefix(img.layer, "sha256:"), strings.TrimPrefix(img.diffID, "sha256:"), diskSum)
			t, err := measure.Pipeline(script)
			must(err)
			return t
		}
	}
	cs := []*measure.Contender{
		{Name: "curl \\| sha256sum, " + *compress + " -d, sha256sum, tar -xO \\| tee FILE \\| sha256sum, `sync FILE`", Short: "unpack+sha256sum", Run: unpack("sha256sum")},
		{Name: "the same with `openssl dgst -sha256`", Short: "unpack+openssl", Run: unpack("openssl dgst -sha256")},
	}
	if *skopeo {
		cs = append(cs, &measure.Contender{Name: "`skopeo copy docker://… dir:` (no unpacking, no fsync)", Short: "skopeo", Run: func() time.Duration {
			return timeSkopeo(ref, *work)
		}})
	}
	vm := &measure.Contender{Name: "vmpod `crictl pull`", Short: "vmpod"}
	vm.Run = func() time.Duration { return timeVmpod(vm, *vmpod, ref, conf, *work) }
	cs = append(cs, vm)
	var old *measure.Contender
	if *oldBin != "" {
		old = &measure.Contender{Name: "vmpod `crictl pull`, -old build " + measure.BuildID(*oldBin), Short: "old"}
		old.Run = func() time.Duration { return timeVmpod(old, *oldBin, ref, conf, *work) }
		cs = append(cs, old)
	}

	sec := measure.NewSection("pulloci", *vmpod, *runs)
	measure.Interleave(cs, *runs, func() { exec.Command("sync").Run() })

	secs := func(d time.Duration) string { return measure.Secs(d) }
	var rows [][]string
	for _, c := range cs {
		rows = append(rows, []string{c.Name, measure.Spread(c.Times, secs)})
	}
	sec.Printf("A %d MiB qcow2 of compressible data (%d bytes; `measure.MixedQcow2`: random, text and nearly empty blocks) as a one-layer %s containerDisk "+
		"(layer %d bytes, %.0f%% of the disk) in Debian's docker-registry on 127.0.0.1; `sync` before each, the order rotating from run to run; "+
		"vmpod starts on an empty store each time.\n\n",
		*sizeMiB, st.Size(), *compress, img.layerSize, 100*float64(img.layerSize)/float64(st.Size()))
	sec.Table([]string{"", fmt.Sprintf("median (spread) of %d", *runs)}, rows)
	best := cs[0]
	if measure.Median(cs[1].Times) < measure.Median(best.Times) {
		best = cs[1]
	}
	target := "met"
	if measure.Median(vm.Times) > measure.Median(best.Times) {
		target = "**not met**"
	}
	rrows := [][]string{
		{"vmpod / unpacking baseline (sha256sum)", measure.Ratio(cs[0], vm)},
		{"vmpod / unpacking baseline (openssl)", measure.Ratio(cs[1], vm)},
	}
	bi := 0
	if best == cs[1] {
		bi = 1
	}
	rrows[bi][1] += ", target ≤ 1 (the faster baseline): " + target
	if *skopeo {
		rrows = append(rrows, []string{"vmpod / skopeo copy", measure.Ratio(cs[2], vm)})
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

// pushed is what the baseline needs to know of the pushed image.
type pushed struct {
	config, layer, diffID string
	layerSize             int64
}

// inspect reads the pushed image's manifest and config from the registry.
func inspect(port int) pushed {
	reg := fmt.Sprintf("http://127.0.0.1:%d/v2/bench/disk", port)
	get := func(url string, v any) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		must(err)
		defer resp.Body.Close()
		must(json.NewDecoder(resp.Body).Decode(v))
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct {
			Digest string
			Size   int64
		}
	}
	get(reg+"/manifests/1", &m)
	if len(m.Layers) != 1 {
		log.Fatalf("the pushed image has %d layers, want 1", len(m.Layers))
	}
	var c struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	get(reg+"/blobs/"+m.Config.Digest, &c)
	return pushed{config: m.Config.Digest, layer: m.Layers[0].Digest, layerSize: m.Layers[0].Size, diffID: c.RootFS.DiffIDs[0]}
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

func timeVmpod(c *measure.Contender, bin, ref, conf, work string) time.Duration {
	v, err := measure.StartVmpod(bin, work, "VMPOD_REGISTRIES_CONF="+conf, "VMPOD_IMAGE_TRANSLATIONS_DIR={dir}/none")
	must(err)
	defer v.Close()
	start := time.Now()
	must(v.Crictl("pull", ref))
	d := time.Since(start)
	must(c.RecordProc(v.Pid()))
	return d
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
