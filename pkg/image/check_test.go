package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// needTools skips a test when qemu-img or prlimit is missing.
func needTools(t *testing.T) {
	t.Helper()
	for _, b := range []string{"qemu-img", "prlimit"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed", b)
		}
	}
}

// makeQcow2 writes a qcow2 image holding some data into dir with
// qemu-img and returns its path.
func makeQcow2(t *testing.T, dir, name string, extra ...string) string {
	t.Helper()
	raw := filepath.Join(dir, name+".raw")
	data := make([]byte, 2<<20)
	for i := range data[:1<<20] {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	args := append([]string{"convert", "-q", "-f", "raw", "-O", "qcow2"}, extra...)
	if b, err := exec.Command("qemu-img", append(args, raw, out)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, b)
	}
	return out
}

func testChecker() Checker { return Checker{CPUSeconds: 30, MemoryBytes: 1 << 30} }

// TestCheckerTellsQemuImgTheFormat runs the checker with a stand-in
// qemu-img that records its arguments: a qcow2 is checked with -f, never
// probed; a raw file is not shown to qemu-img at all (there is nothing in
// it to check); a qemu-img that cannot open the file refuses it.
func TestCheckerTellsQemuImgTheFormat(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "qemu-img")
	script := `#!/bin/sh
echo "$*" >>` + argsFile + `
case $* in *cannot-open*) echo "qemu-img: Could not open: something QEMU dislikes" >&2; exit 1;; esac
`
	if err := os.WriteFile(fake, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18), 0o600); err != nil {
		t.Fatal(err)
	}
	q := makeQcow2(t, dir, "disk.qcow2")
	bad := filepath.Join(dir, "cannot-open.qcow2")
	if b, err := os.ReadFile(q); err != nil || os.WriteFile(bad, b, 0o600) != nil {
		t.Fatal(err)
	}
	c := testChecker()
	c.QemuImg = fake
	for _, tc := range []struct {
		path    string
		want    []string
		refused string
	}{
		{raw, nil, ""},
		{q, []string{"check -f qcow2 --output=json " + q}, ""},
		{bad, []string{"check -f qcow2 --output=json " + bad}, "qemu-img could not open the file as a qcow2 image"},
	} {
		os.Remove(argsFile)
		info, err := c.Check(context.Background(), tc.path)
		if tc.refused == "" && err != nil {
			t.Fatalf("Check(%s): %v", tc.path, err)
		}
		if tc.refused != "" && (err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.refused)) {
			t.Fatalf("Check(%s) = %v, want InvalidArgument mentioning %q", tc.path, err, tc.refused)
		}
		got, _ := os.ReadFile(argsFile)
		var lines []string
		if s := strings.TrimSpace(string(got)); s != "" {
			lines = strings.Split(s, "\n")
		}
		if !slices.Equal(lines, tc.want) {
			t.Errorf("qemu-img called with %q, want %q (format %s)", lines, tc.want, info.Format)
		}
	}
}

// TestCheckerAgreesWithQemuImgInfo compares what the checker reads in
// process with what `qemu-img info` reports of the same files.
func TestCheckerAgreesWithQemuImgInfo(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, bytes.Repeat([]byte{0, 1, 2, 0xff}, 3<<17), 0o600)
	for _, p := range []string{
		makeQcow2(t, dir, "plain.qcow2"),
		makeQcow2(t, dir, "compressed.qcow2", "-c"),
		makeQcow2(t, dir, "zstd.qcow2", "-c", "-o", "compression_type=zstd"),
		makeQcow2(t, dir, "v2.qcow2", "-o", "compat=0.10"),
		makeQcow2(t, dir, "big-clusters.qcow2", "-o", "cluster_size=2M"),
		raw,
	} {
		got, err := testChecker().Check(context.Background(), p)
		if err != nil {
			t.Fatalf("Check(%s): %v", p, err)
		}
		format := strings.TrimPrefix(filepath.Ext(p), ".")
		out, err := exec.Command("qemu-img", "info", "-f", format, "--output=json", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		var want struct {
			Format      string `json:"format"`
			VirtualSize int64  `json:"virtual-size"`
		}
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatal(err)
		}
		if got.Format != want.Format || got.VirtualSize != want.VirtualSize {
			t.Errorf("%s: Check says %+v, qemu-img info %+v", filepath.Base(p), got, want)
		}
	}
}

func TestCheckerRefuses(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	good := makeQcow2(t, dir, "good.qcow2")
	compressed := makeQcow2(t, dir, "compressed.qcow2", "-c")
	data, _ := os.ReadFile(good)
	truncated := filepath.Join(dir, "truncated.qcow2")
	os.WriteFile(truncated, data[:len(data)-1000], 0o600)
	cdata, _ := os.ReadFile(compressed)
	ctruncated := filepath.Join(dir, "ctruncated.qcow2")
	os.WriteFile(ctruncated, cdata[:len(cdata)-600], 0o600)
	backed := filepath.Join(dir, "backed.qcow2")
	run := func(args ...string) {
		if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, b)
		}
	}
	run("create", "-q", "-f", "qcow2", "-b", good, "-F", "qcow2", backed)
	vmdk := filepath.Join(dir, "disk.vmdk")
	run("convert", "-q", "-f", "qcow2", "-O", "vmdk", good, vmdk)
	// Refcount of the header cluster set to 0: the tables are whole, the
	// refcounts are not.
	badRef := filepath.Join(dir, "badref.qcow2")
	b := append([]byte(nil), data...)
	block := binary.BigEndian.Uint64(b[binary.BigEndian.Uint64(b[48:]):]) &^ 0x1ff
	binary.BigEndian.PutUint16(b[block:], 0)
	os.WriteFile(badRef, b, 0o600)
	// Header fields qemu-img info used to be asked about, now read in
	// process only: each is refused before qemu-img sees the file.
	patched := func(name string, off int, v uint64, n int) string {
		b := append([]byte(nil), data...)
		if n == 8 {
			binary.BigEndian.PutUint64(b[off:], v)
		} else {
			binary.BigEndian.PutUint32(b[off:], uint32(v))
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	dataFile := patched("datafile.qcow2", 72, 1<<2, 8)
	encrypted := patched("aes.qcow2", 32, 1, 4)
	luks := patched("luks.qcow2", 32, 2, 4)
	dirty := patched("dirty.qcow2", 72, 1<<0, 8)
	corrupt := patched("corrupt.qcow2", 72, 1<<1, 8)
	backingOffset := patched("backing-offset.qcow2", 8, 0x200, 8)
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18), 0o600)
	xz := filepath.Join(dir, "disk.raw.xz")
	os.WriteFile(xz, append([]byte("\xfd7zXZ\x00"), make([]byte, 1018)...), 0o600)

	c := testChecker()
	for _, tc := range []struct {
		path, want string // want "" accepts
	}{
		{good, ""},
		{compressed, ""},
		{raw, ""},
		{truncated, "not a complete qcow2 image"},
		{ctruncated, "not a complete qcow2 image"},
		{backed, "backing file"},
		{backingOffset, "backing file"},
		{dataFile, "external data file"},
		{encrypted, "encrypted"},
		{luks, "encrypted"},
		{dirty, "dirty"},
		{corrupt, "corrupt"},
		{vmdk, "VMDK"},
		{badRef, "qemu-img check found"},
		{xz, "xz-compressed"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			info, err := c.Check(context.Background(), tc.path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				if want := strings.TrimPrefix(filepath.Ext(tc.path), "."); info.Format != want {
					t.Errorf("format %q, want %q", info.Format, want)
				}
				return
			}
			if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %+v, %v; want InvalidArgument mentioning %q", info, err, tc.want)
			}
		})
	}
}
