package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		info DiskInfo
		want string
	}{
		{"qcow2 ok", DiskInfo{Format: "qcow2"}, ""},
		{"backing", DiskInfo{Format: "qcow2", Backing: "/etc/shadow"}, "backing file"},
		{"data file", func() DiskInfo { d := DiskInfo{Format: "qcow2"}; d.Specific.Data.DataFile = "/dev/sda"; return d }(), "data file"},
		{"encrypted", DiskInfo{Format: "qcow2", Encrypted: true}, "encrypted"},
		{"vmdk", DiskInfo{Format: "vmdk"}, "only qcow2 and raw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.info)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

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
// qemu-img that records its arguments: the format is always given with
// -f, never probed.
func TestCheckerTellsQemuImgTheFormat(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "qemu-img")
	script := `#!/bin/sh
echo "$*" >>` + argsFile + `
for a; do case $a in qcow2|raw) f=$a;; esac; done
case $1 in info) echo "{\"format\": \"$f\", \"virtual-size\": 1048576}";; esac
`
	if err := os.WriteFile(fake, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18), 0o600); err != nil {
		t.Fatal(err)
	}
	q := makeQcow2(t, dir, "disk.qcow2")
	c := testChecker()
	c.QemuImg = fake
	for _, tc := range []struct {
		path string
		want []string
	}{
		{raw, []string{"info -f raw --output=json " + raw}},
		{q, []string{"info -f qcow2 --output=json " + q, "check -f qcow2 --output=json " + q}},
	} {
		os.Remove(argsFile)
		info, err := c.Check(context.Background(), tc.path)
		if err != nil {
			t.Fatalf("Check(%s): %v", tc.path, err)
		}
		got, _ := os.ReadFile(argsFile)
		if lines := strings.Split(strings.TrimSpace(string(got)), "\n"); !slices.Equal(lines, tc.want) {
			t.Errorf("qemu-img called with %q, want %q (format %s)", lines, tc.want, info.Format)
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
