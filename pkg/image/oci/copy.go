package oci

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// copyBufferSize is the unit of the disk copy: large enough that syscalls
// and hashing per byte stay cheap, small enough to stream. An all-zero
// buffer becomes a hole in the file.
const copyBufferSize = 256 << 10

// writebackChunk is how much is written between sync_file_range calls.
const writebackChunk = 32 << 20

var zeroBuffer = make([]byte, copyBufferSize)

// errCorrupt marks a blob whose bytes do not match the manifest.
var errCorrupt = errors.New("blob does not match the manifest")

// verifyingReader passes a blob through while checking its digest and
// size: at EOF it returns an error wrapping errCorrupt (and
// errdefs.ErrUnavailable) instead of io.EOF if the bytes do not match.
// containers/image's GetBlob does not verify. Reads may come from a
// decompressor's goroutine, so the state is guarded.
type verifyingReader struct {
	r        io.Reader
	want     digest.Digest
	size     int64 // from the manifest; <= 0: unknown
	verifier digest.Verifier
	counter  *atomic.Int64 // bytes downloaded by the whole pull

	mu       sync.Mutex
	n        int64
	err      error // the first error of r, or the verification's
	verified bool
}

func newVerifyingReader(r io.Reader, want digest.Digest, size int64, counter *atomic.Int64) *verifyingReader {
	return &verifyingReader{r: r, want: want, size: size, verifier: want.Verifier(), counter: counter}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	if v.verified {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.verifier.Write(p[:n])
		v.n += int64(n)
		v.counter.Add(int64(n))
		if v.size > 0 && v.n > v.size {
			v.err = fmt.Errorf("blob %s is longer than the %d bytes the manifest says: %w: %w", v.want, v.size, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
	}
	switch {
	case err == io.EOF:
		if v.size > 0 && v.n != v.size {
			v.err = fmt.Errorf("blob %s ended after %d of the %d bytes the manifest says: %w: %w", v.want, v.n, v.size, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
		if !v.verifier.Verified() {
			v.err = fmt.Errorf("the content of blob %s does not match its digest: the registry served corrupt data; nothing was stored: %w: %w",
				v.want, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
		v.verified = true
	case err != nil:
		v.err = err
	}
	return n, err
}

// state returns the reader's error and whether the whole blob was read
// and matched.
func (v *verifyingReader) state() (error, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err, v.verified
}

// copyDisk writes src into dst from offset 0 while hashing it, and returns
// the bytes copied. dst must be empty. Reading, hashing and writing
// overlap: each buffer goes to a hasher goroutine and to the writer (this
// goroutine) and is reused once both are done. All-zero buffers are not
// written but left as holes (dst is truncated to the full size at the
// end), so raw disks with empty space stay sparse. Every writebackChunk
// bytes the kernel is asked to start writing the file out, so the final
// fsync finds little left to flush.
func copyDisk(dst *os.File, src io.Reader, h hash.Hash, written *atomic.Int64) (int64, error) {
	const nbuf = 8
	type chunk struct {
		buf []byte
		n   int
	}
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, copyBufferSize)
	}
	toHash := make(chan chunk, nbuf)
	hashed := make(chan []byte, nbuf)
	go func() {
		for c := range toHash {
			h.Write(c.buf[:c.n])
			hashed <- c.buf
		}
		close(hashed)
	}()
	pending := 0 // buffers at the hasher
	var n, synced int64
	var retErr error
	for {
		var buf []byte
		select {
		case buf = <-free:
		case buf = <-hashed:
			pending--
		}
		m, rerr := fill(src, buf)
		if m > 0 {
			toHash <- chunk{buf, m}
			pending++
			if !bytes.Equal(buf[:m], zeroBuffer[:m]) {
				if _, err := dst.WriteAt(buf[:m], n); err != nil {
					retErr = writeError{fmt.Errorf("write disk file: %w", err)}
					break
				}
			}
			n += int64(m)
			written.Store(n)
			if n-synced >= writebackChunk {
				// Start writeback of what is written so far; do not wait.
				_ = unix.SyncFileRange(int(dst.Fd()), synced, n-synced, unix.SYNC_FILE_RANGE_WRITE)
				synced = n
			}
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			retErr = rerr
			break
		}
	}
	close(toHash)
	for range hashed {
	}
	if retErr != nil {
		return n, retErr
	}
	// Trailing holes: give the file its full size.
	if err := dst.Truncate(n); err != nil {
		return n, writeError{fmt.Errorf("size disk file: %w", err)}
	}
	return n, nil
}

// fill reads into buf until it is full or src returns an error (io.EOF
// included, unlike io.ReadFull).
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// progress counts a pull's bytes for the periodic log line.
type progress struct {
	downloaded atomic.Int64 // blob bytes read from the registry
	written    atomic.Int64 // disk bytes of the current copy
	total      int64        // sum of the layers' sizes: an upper bound
	start      time.Time
}

// report logs progress every interval until stop is called.
func (p *progress) report(log *slog.Logger, interval time.Duration) (stop func()) {
	t := time.NewTicker(interval)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				n := p.downloaded.Load()
				attrs := []any{"bytes", n, "bytes_total", p.total, "disk_bytes", p.written.Load(), "rate_mib_s", rate(n, p.start)}
				if p.total > 0 {
					attrs = append(attrs, "percent", fmt.Sprintf("%.1f", float64(n)*100/float64(p.total)))
				}
				log.Info("pull progress", attrs...)
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

func rate(n int64, start time.Time) string {
	return fmt.Sprintf("%.1f", float64(n)/(1<<20)/max(time.Since(start).Seconds(), 1e-3))
}
