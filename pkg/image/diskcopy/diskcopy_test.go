package diskcopy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

func TestCopyHashesAndKeepsHoles(t *testing.T) { bothPaths(t, testCopyHashesAndKeepsHoles) }

func testCopyHashesAndKeepsHoles(t *testing.T) {
	data := make([]byte, 3*bufferSize+123)
	rand.New(rand.NewSource(1)).Read(data[:bufferSize])   // data, then
	rand.New(rand.NewSource(2)).Read(data[3*bufferSize:]) // 2 zero buffers, then a tail
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	var written atomic.Int64
	// OneByteReader-ish small reads exercise Fill.
	n, err := Copy(f, iotest.HalfReader(bytes.NewReader(data)), h, &written, Limit{})
	if err != nil || n != int64(len(data)) || written.Load() != n {
		t.Fatalf("Copy = %d, %v (written %d)", n, err, written.Load())
	}
	want := sha256.Sum256(data)
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("hash differs from the data's")
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, data) {
		t.Fatal("file differs from the data")
	}
	st, _ := f.Stat()
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= int64(len(data)) {
		t.Errorf("file allocates %d bytes for %d with two zero buffers: no holes", blocks, len(data))
	}
}

func TestCopyPassesReadErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var written atomic.Int64
	src := io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(io.ErrUnexpectedEOF))
	n, err := Copy(f, src, sha256.New(), &written, Limit{})
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 3 {
		t.Fatalf("Copy = %d, %v; want 3 bytes and the reader's error", n, err)
	}
	var we *WriteError
	if errors.As(err, &we) {
		t.Fatal("a read error was reported as a write error")
	}
}

func TestCopyWriteError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(p, nil, 0o644)
	f, err := os.Open(p) // read-only: writes fail
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var written atomic.Int64
	_, err = Copy(f, bytes.NewReader([]byte("not zero")), sha256.New(), &written, Limit{})
	var we *WriteError
	if !errors.As(err, &we) {
		t.Fatalf("err = %v, want a WriteError", err)
	}
}

func TestCopyLimit(t *testing.T) {
	data := bytes.Repeat([]byte{1}, 3<<20)
	var written atomic.Int64
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Copy(f, bytes.NewReader(data), sha256.New(), &written, Limit{Max: 1 << 20})
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Max != 1<<20 {
		t.Fatalf("err = %v, want TooLargeError", err)
	}
	if st, _ := f.Stat(); st.Size() > 1<<20 {
		t.Fatalf("wrote %d bytes past the limit", st.Size())
	}

	g, _ := os.CreateTemp(t.TempDir(), "disk")
	defer g.Close()
	var calls []int64
	full := errors.New("disk full")
	_, err = Copy(g, bytes.NewReader(data), sha256.New(), &written, Limit{Every: 1 << 20, Check: func(n int64) error {
		calls = append(calls, n)
		if n >= 2<<20 {
			return full
		}
		return nil
	}})
	if !errors.Is(err, full) || len(calls) != 2 {
		t.Fatalf("err = %v after checks at %v; want the check's error at 2 MiB", err, calls)
	}
	// Exactly the limit is fine.
	h, _ := os.CreateTemp(t.TempDir(), "disk")
	defer h.Close()
	if n, err := Copy(h, bytes.NewReader(data), sha256.New(), &written, Limit{Max: int64(len(data))}); err != nil || n != int64(len(data)) {
		t.Fatalf("copy of exactly Max bytes = %d, %v", n, err)
	}
}

// copyToFile copies data into a new file in dir and returns the file's
// content, its allocated bytes and the hash.
func copyToFile(t *testing.T, dir string, data []byte) (got []byte, allocated int64) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	var written atomic.Int64
	n, err := Copy(f, bytes.NewReader(data), h, &written, Limit{})
	if err != nil || n != int64(len(data)) || written.Load() != n {
		t.Fatalf("Copy = %d, %v (written %d), want %d bytes", n, err, written.Load(), len(data))
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("hash differs from the data's")
	}
	// The copy gives the file its flags back: no O_DIRECT left for the
	// caller's own reads and writes.
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_DIRECT != 0 {
		t.Fatalf("file flags after the copy: %#x, %v", fl, err)
	}
	got, err = os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	return got, st.Sys().(*syscall.Stat_t).Blocks * 512
}

// bothPaths runs f with O_DIRECT and through the page cache.
func bothPaths(t *testing.T, f func(t *testing.T)) {
	t.Run("direct", f)
	t.Run("page cache", func(t *testing.T) {
		directIO = false
		defer func() { directIO = true }()
		f(t)
	})
}

func TestCopyUnalignedSizes(t *testing.T) { bothPaths(t, testCopyUnalignedSizes) }

func testCopyUnalignedSizes(t *testing.T) {
	// O_DIRECT writes whole 4 KiB blocks: the last one is padded, then
	// the file truncated to its size.
	for _, size := range []int{1, 511, 4095, 4097, holeSize + 1, bufferSize - 1, bufferSize + 7, 2*bufferSize + holeSize + 100} {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(data)
		if got, _ := copyToFile(t, t.TempDir(), data); !bytes.Equal(got, data) {
			t.Fatalf("size %d: the file (%d bytes) differs from the data", size, len(got))
		}
	}
	// A last block whose data ends in zeros, and a file of zeros only.
	data := make([]byte, bufferSize+holeSize+300)
	data[bufferSize+5] = 1
	if got, _ := copyToFile(t, t.TempDir(), data); !bytes.Equal(got, data) {
		t.Fatal("a tail ending in zeros was not copied whole")
	}
	zeros := make([]byte, 3*holeSize+17)
	if got, alloc := copyToFile(t, t.TempDir(), zeros); !bytes.Equal(got, zeros) || alloc != 0 {
		t.Fatalf("zeros: %d bytes, %d allocated; want all zeros and a hole", len(got), alloc)
	}
}

func TestCopyHolesInsideABuffer(t *testing.T) { bothPaths(t, testCopyHolesInsideABuffer) }

func testCopyHolesInsideABuffer(t *testing.T) {
	// Zero blocks of holeSize inside one buffer are holes too; a block
	// with one byte set is written.
	data := make([]byte, bufferSize)
	for i := 0; i < len(data); i += 2 * holeSize {
		rand.New(rand.NewSource(int64(i))).Read(data[i : i+holeSize])
	}
	data[3*holeSize+holeSize/2] = 9
	got, alloc := copyToFile(t, t.TempDir(), data)
	if !bytes.Equal(got, data) {
		t.Fatal("file differs from the data")
	}
	// 8 random blocks and one with a byte set, of 16.
	if want := int64(9 * holeSize); alloc > want+holeSize {
		t.Errorf("file allocates %d bytes, want about %d: zero blocks inside a buffer were written", alloc, want)
	}
}

// endless is a source that never ends, counting what was read.
type endless struct{ n atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 1
	}
	e.n.Add(int64(len(p)))
	return len(p), nil
}

func TestCopyWriteErrorStopsTheReader(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(p, nil, 0o644)
	f, err := os.Open(p) // read-only: writes fail
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := &endless{}
	var written atomic.Int64
	_, err = Copy(f, src, sha256.New(), &written, Limit{})
	var we *WriteError
	if !errors.As(err, &we) {
		t.Fatalf("err = %v, want a WriteError", err)
	}
	if got := src.n.Load(); got > 2*buffers*bufferSize {
		t.Fatalf("read %d bytes after the first write failed", got)
	}
}

func BenchmarkCopy(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.New(rand.NewSource(1)).Read(data)
	dir := b.TempDir()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, "disk"))
		if err != nil {
			b.Fatal(err)
		}
		var written atomic.Int64
		if _, err := Copy(f, bytes.NewReader(data), sha256.New(), &written, Limit{}); err != nil {
			b.Fatal(err)
		}
		f.Sync()
		f.Close()
	}
}
