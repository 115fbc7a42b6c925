package qcow2

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// image is a small qcow2 file built by hand: 512-byte clusters; cluster 0
// the header, 1 the refcount table, 2 a refcount block, 3 the L1 table, 4
// the L2 table, 5 and 6 data.
type image struct {
	b []byte
}

const cs = 512

func newImage() *image {
	im := &image{b: make([]byte, 7*cs)}
	be := binary.BigEndian
	copy(im.b, Magic)
	be.PutUint32(im.b[4:], 3)             // version
	be.PutUint32(im.b[20:], 9)            // cluster_bits
	be.PutUint64(im.b[24:], 64*cs)        // virtual size: one L2 table's worth
	be.PutUint32(im.b[36:], 1)            // l1_size
	be.PutUint64(im.b[40:], 3*cs)         // l1_table_offset
	be.PutUint64(im.b[48:], 1*cs)         // refcount_table_offset
	be.PutUint32(im.b[56:], 1)            // refcount_table_clusters
	be.PutUint32(im.b[96:], 4)            // refcount_order
	be.PutUint32(im.b[100:], 104)         // header_length
	be.PutUint64(im.b[1*cs:], 2*cs)       // refcount table -> block
	be.PutUint64(im.b[3*cs:], 4*cs|1<<63) // L1 -> L2
	be.PutUint64(im.b[4*cs:], 5*cs|1<<63) // guest cluster 0 -> data
	be.PutUint64(im.b[4*cs+8:], 6*cs|1<<63)
	for i := 5 * cs; i < 7*cs; i++ {
		im.b[i] = byte(i)
	}
	return im
}

func (im *image) u32(off int, v uint32) *image { binary.BigEndian.PutUint32(im.b[off:], v); return im }
func (im *image) u64(off int, v uint64) *image { binary.BigEndian.PutUint64(im.b[off:], v); return im }

func check(b []byte) (Header, error) { return Check(bytes.NewReader(b), int64(len(b))) }

func TestCheckHandBuilt(t *testing.T) {
	if _, err := check(newImage().b); err != nil {
		t.Fatalf("valid image: %v", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"no magic", append([]byte("QFI\x00"), newImage().b[4:]...), "magic"},
		{"short", newImage().b[:50], "too short"},
		{"magic only", []byte(Magic), "too short"},
		{"version 4", newImage().u32(4, 4).b, "version 4"},
		{"cluster bits 30", newImage().u32(20, 30).b, "cluster_bits 30"},
		{"header length", newImage().u32(100, 100).b, "header_length"},
		{"unknown feature", newImage().u64(72, 1<<20).b, "unknown incompatible"},
		{"L1 past the end", newImage().u64(40, 100*cs).b, "L1 table"},
		{"L1 misaligned", newImage().u64(40, 3*cs+8).b, "not aligned"},
		{"L1 too small", newImage().u64(24, 65*cs).b, "too few"},
		{"virtual size past int64", newImage().u64(24, 1<<63).b, "virtual size"},
		{"virtual size that wraps the L1 count", newImage().u64(24, 1<<64-1).b, "virtual size"},
		{"L1 huge", newImage().u32(36, 1<<30).b, "L1 table"},
		{"L2 past the end", newImage().u64(3*cs, 40*cs).b, "L2 table 0"},
		{"data past the end", newImage().u64(4*cs+16, 9*cs|1<<63).b, "data cluster 2"},
		{"truncated data", newImage().b[:7*cs-1], "data cluster 1"},
		{"refcount table past the end", newImage().u64(48, 50*cs).b, "refcount table"},
		{"no refcount table", newImage().u32(56, 0).b, "no refcount table"},
		{"refcount block past the end", newImage().u64(1*cs, 60*cs).b, "refcount block 0"},
		{"snapshot table past the end", newImage().u32(60, 1).u64(64, 80*cs).b, "snapshot 0"},
		{"compressed past the end", newImage().u64(4*cs+16, 1<<62|uint64(20*cs)).b, "compressed cluster 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := check(tc.b)
			if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want InvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSelfContained(t *testing.T) {
	withBacking := newImage()
	withBacking.u64(8, 200).u32(16, 11)
	copy(withBacking.b[200:], "/etc/shadow")
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"backing file", withBacking.b, `backing file "/etc/shadow"`},
		{"encrypted", newImage().u32(32, 1).b, "encrypted"},
		{"dirty", newImage().u64(72, IncompatDirty).b, "dirty"},
		{"corrupt", newImage().u64(72, IncompatCorrupt).b, "corrupt"},
		{"data file bit", newImage().u64(72, IncompatExternalDataFile).b, "external data file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := check(tc.b)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			err = h.SelfContained()
			if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SelfContained = %v, want %q", err, tc.want)
			}
		})
	}
	h, _ := check(newImage().b)
	if err := h.SelfContained(); err != nil {
		t.Fatalf("plain image: %v", err)
	}
}

// qemuImage makes a qcow2 file with qemu-img from random data; compressed
// asks for compressed clusters. The test skips without qemu-img.
func qemuImage(t *testing.T, compressed bool, extra ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := make([]byte, 3<<20)
	rand.Read(raw[:1<<20]) // the rest stays zero: unallocated clusters
	copy(raw[2<<20:], bytes.Repeat([]byte("vmpod "), 50000))
	if err := os.WriteFile(filepath.Join(dir, "raw"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"convert", "-q", "-f", "raw", "-O", "qcow2"}
	if compressed {
		args = append(args, "-c")
	}
	args = append(args, extra...)
	args = append(args, filepath.Join(dir, "raw"), filepath.Join(dir, "out"))
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckTruncated cuts qemu-made images short: every cut that removes
// data the image refers to fails. Only the zero padding after the last
// byte QEMU needs may go unnoticed (it carries nothing).
func TestCheckTruncated(t *testing.T) {
	for _, tc := range []struct {
		name       string
		compressed bool
		extra      []string
	}{
		{"plain", false, nil},
		{"compressed zlib", true, nil},
		{"compressed zstd", true, []string{"-o", "compression_type=zstd"}},
		{"extended L2", false, []string{"-o", "extended_l2=on,cluster_size=128k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := qemuImage(t, tc.compressed, tc.extra...)
			if _, err := check(b); err != nil {
				t.Fatalf("whole image: %v", err)
			}
			last := len(b) - 1
			for last > 0 && b[last] == 0 {
				last--
			}
			missed := 0
			for _, cut := range []int{1, 7, 300, 511, 512, 513, 4096, 65536, len(b) / 2, len(b) - 200} {
				n := len(b) - cut
				_, err := check(b[:n])
				switch {
				case err == nil && n > last+1-8:
					// Only zero padding or the last bits of a deflate
					// stream QEMU does not need were cut.
					missed++
				case err == nil:
					t.Errorf("cut of %d bytes (file %d, data to %d) not detected", cut, len(b), last+1)
				case !errors.Is(err, errdefs.ErrInvalidArgument) || !errors.Is(err, ErrIncomplete):
					t.Errorf("cut of %d: %v is not InvalidArgument and ErrIncomplete", cut, err)
				}
			}
			t.Logf("%d bytes, %d small cuts inside the padding", len(b), missed)
		})
	}
}

func FuzzCheck(f *testing.F) {
	f.Add(newImage().b)
	f.Add(newImage().u32(60, 1).u64(64, 5*cs).b)
	f.Add(newImage().u64(4*cs+16, 1<<62|uint64(6*cs)).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := check(b)
		if err == nil {
			_ = h.SelfContained()
			// pkg/image records it as an int64.
			if h.VirtualSize > math.MaxInt64 {
				t.Fatalf("accepted a virtual size of %d", h.VirtualSize)
			}
		}
	})
}
