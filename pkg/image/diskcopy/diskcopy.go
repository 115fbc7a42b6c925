// Package diskcopy streams a disk image into a file while hashing it, the
// core of both of vmpod's pullers (HTTP(S) and OCI registries): reading,
// hashing and writing overlap, all-zero blocks become holes, and writeback
// starts early so the final fsync is short.
package diskcopy

import (
	"bytes"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// copyBufferSize is the unit of the copy: large enough that syscalls and
// hashing per byte stay cheap, small enough to stream. An all-zero buffer
// becomes a hole in the file.
const copyBufferSize = 256 << 10

// writebackChunk is how much is written between sync_file_range calls.
const writebackChunk = 32 << 20

var zeroBuffer = make([]byte, copyBufferSize)

// WriteError marks an error of the local file (disk full, I/O error), as
// opposed to one of the source.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Limit bounds a copy. The zero value bounds nothing.
type Limit struct {
	// Max ends the copy with a *TooLargeError before more than Max bytes
	// are written; 0 means no limit.
	Max int64
	// Check, when set, is called every Every bytes with the count copied so
	// far (free space, say); its error ends the copy.
	Check func(n int64) error
	Every int64
}

// TooLargeError ends a copy whose source holds more than Limit.Max bytes.
type TooLargeError struct{ Max int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("more than %d bytes", e.Max)
}

// Copy writes src into dst from offset 0 while hashing it, and returns
// the bytes copied. dst must be empty. Reading, hashing and writing
// overlap: each buffer goes to a hasher goroutine and to the writer (this
// goroutine) and is reused once both are done. All-zero buffers are not
// written but left as holes (dst is truncated to the full size at the
// end), so raw disks with empty space stay sparse. Every writebackChunk
// bytes the kernel is asked to start writing the file out, so the final
// fsync finds little left to flush. lim bounds the bytes and runs its
// check on the way.
func Copy(dst *os.File, src io.Reader, h hash.Hash, written *atomic.Int64, lim Limit) (int64, error) {
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
	var n, synced, checked int64
	var retErr error
	for {
		var buf []byte
		select {
		case buf = <-free:
		case buf = <-hashed:
			pending--
		}
		m, rerr := Fill(src, buf)
		if lim.Max > 0 && n+int64(m) > lim.Max {
			free <- buf
			retErr = &TooLargeError{Max: lim.Max}
			break
		}
		if lim.Check != nil && n-checked >= lim.Every {
			if err := lim.Check(n); err != nil {
				free <- buf
				retErr = err
				break
			}
			checked = n
		}
		if m > 0 {
			toHash <- chunk{buf, m}
			pending++
			if !bytes.Equal(buf[:m], zeroBuffer[:m]) {
				if _, err := dst.WriteAt(buf[:m], n); err != nil {
					retErr = &WriteError{Err: fmt.Errorf("write disk file: %w", err)}
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
		return n, &WriteError{Err: fmt.Errorf("size disk file: %w", err)}
	}
	return n, nil
}

// Fill reads into buf until it is full or src returns an error (io.EOF
// included, unlike io.ReadFull).
func Fill(src io.Reader, buf []byte) (int, error) {
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
