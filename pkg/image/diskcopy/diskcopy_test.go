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
)

func TestCopyHashesAndKeepsHoles(t *testing.T) {
	data := make([]byte, 3*copyBufferSize+123)
	rand.New(rand.NewSource(1)).Read(data[:copyBufferSize])   // data, then
	rand.New(rand.NewSource(2)).Read(data[3*copyBufferSize:]) // 2 zero buffers, then a tail
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
