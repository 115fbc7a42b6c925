// Package diskcopy streams a disk image into a file while hashing it, the
// core of both of vmpod's pullers (HTTP(S) and OCI registries): reading,
// hashing and writing overlap, each in its own goroutine; the file is
// written with O_DIRECT where the file system allows it, from buffers
// outside the Go heap; all-zero blocks become holes.
package diskcopy

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// bufferSize is the unit of the copy: one read into it, one hash call
// and (at most) one write of it. Large enough that an O_DIRECT write
// keeps the disk busy and syscalls stay cheap per byte, small enough to
// stream.
const bufferSize = 1 << 20

// buffers is how many buffers are in flight: one being read into, the
// others queued for the hasher and the writer or in their hands.
const buffers = 8

// holeSize is the granularity of holes: an aligned block of this many
// zero bytes is not written (the file is truncated to its full size at
// the end). QEMU's default qcow2 cluster size.
const holeSize = 64 << 10

// directAlign is what O_DIRECT asks of offsets, lengths and buffer
// addresses: the logical block size of the device, 512 or 4096 bytes.
const directAlign = 4096

// writebackChunk is how much is written between sync_file_range calls
// when the file is written through the page cache.
const writebackChunk = 32 << 20

var zeroBlock = make([]byte, holeSize)

// directIO is false in tests of the page cache path.
var directIO = true

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

// chunk is one buffer's worth of the source at offset off.
type chunk struct {
	buf []byte
	n   int
	off int64
}

// Copy writes src into dst from offset 0 while hashing it, and returns
// the bytes read from src. dst must be empty and open for writing.
//
// Three goroutines overlap: this one reads src into a buffer and hands it
// on, a hasher hashes it, a writer writes it at its offset and frees the
// buffer for the next read. The buffers are mapped outside the Go heap
// (page-aligned, and unmapped when the copy ends, so the memory goes back
// to the system at once), and dst is switched to O_DIRECT for the copy:
// the data goes from the buffers to the disk without a copy into the
// page cache, and leaves no dirty pages for the final fsync (or for
// other processes) to wait for. Where the file system refuses O_DIRECT,
// the file is written through the page cache and the kernel is asked to
// start writeback every writebackChunk bytes. Aligned all-zero blocks of
// holeSize bytes are not written, so raw disks with empty space stay
// sparse; the last block is written padded with zeros to the alignment
// O_DIRECT needs; the file is truncated to its size at the end.
//
// written is set to the bytes written so far, a buffer at a time (a
// caller watching a slow source counts its reads itself); lim bounds the
// bytes read and runs its check on the way. A write error is a
// *WriteError.
func Copy(dst *os.File, src io.Reader, h hash.Hash, written *atomic.Int64, lim Limit) (int64, error) {
	mem, err := unix.Mmap(-1, 0, buffers*bufferSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("map copy buffers: %w", err)
	}
	defer unix.Munmap(mem)
	w := newWriter(dst, written)
	defer w.restore()

	free := make(chan []byte, buffers)
	for i := range buffers {
		free <- mem[i*bufferSize : (i+1)*bufferSize : (i+1)*bufferSize]
	}
	toHash := make(chan chunk, buffers)
	toWrite := make(chan chunk, buffers)
	go func() {
		for c := range toHash {
			h.Write(c.buf[:c.n])
			toWrite <- c
		}
		close(toWrite)
	}()
	// The writer owns werr until done is closed; failed tells the reader
	// to stop early.
	var werr error
	var failed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range toWrite {
			if werr == nil {
				if werr = w.write(c); werr != nil {
					failed.Store(true)
				}
			}
			free <- c.buf
		}
	}()

	var n, checked int64
	var rerr error
	for !failed.Load() {
		buf := <-free
		if failed.Load() {
			break
		}
		m, err := Fill(src, buf)
		if lim.Max > 0 && n+int64(m) > lim.Max {
			rerr = &TooLargeError{Max: lim.Max}
			break
		}
		if lim.Check != nil && n-checked >= lim.Every {
			if err := lim.Check(n); err != nil {
				rerr = err
				break
			}
			checked = n
		}
		if m > 0 {
			toHash <- chunk{buf: buf, n: m, off: n}
			n += int64(m)
		} else {
			free <- buf
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(toHash)
	<-done
	if werr != nil {
		return n, werr
	}
	if rerr != nil {
		return n, rerr
	}
	// Trailing holes and the padding of the last block: give the file its
	// size.
	if err := dst.Truncate(n); err != nil {
		return n, &WriteError{Err: fmt.Errorf("size disk file: %w", err)}
	}
	return n, nil
}

// writer writes chunks into the file, with O_DIRECT while it can.
type writer struct {
	f       *os.File
	fd      int
	flags   int  // the file's status flags before the copy
	direct  bool // O_DIRECT is on
	synced  int64
	written *atomic.Int64
}

func newWriter(f *os.File, written *atomic.Int64) *writer {
	w := &writer{f: f, fd: int(f.Fd()), flags: -1, written: written}
	flags, err := unix.FcntlInt(uintptr(w.fd), unix.F_GETFL, 0)
	if err != nil {
		return w
	}
	w.flags = flags
	if !directIO {
		return w
	}
	// Refused by file systems without direct I/O (tmpfs before Linux 6.6,
	// some FUSE ones): the page cache then.
	_, err = unix.FcntlInt(uintptr(w.fd), unix.F_SETFL, flags|unix.O_DIRECT)
	w.direct = err == nil
	return w
}

// restore gives the file its flags back.
func (w *writer) restore() {
	if w.direct {
		unix.FcntlInt(uintptr(w.fd), unix.F_SETFL, w.flags)
		w.direct = false
	}
}

// write writes c, leaving its all-zero blocks of holeSize out.
func (w *writer) write(c chunk) error {
	data := c.buf[:c.n]
	for i := 0; i < len(data); {
		if end := min(i+holeSize, len(data)); bytes.Equal(data[i:end], zeroBlock[:end-i]) {
			i = end
			continue
		}
		j := i + holeSize
		for j < len(data) && !bytes.Equal(data[j:min(j+holeSize, len(data))], zeroBlock[:min(holeSize, len(data)-j)]) {
			j += holeSize
		}
		j = min(j, len(data))
		if err := w.writeAt(c.buf, i, j, c.off); err != nil {
			return &WriteError{Err: fmt.Errorf("write disk file: %w", err)}
		}
		i = j
	}
	end := c.off + int64(c.n)
	w.written.Store(end)
	if !w.direct && end-w.synced >= writebackChunk {
		// Start writeback of what is written so far; do not wait.
		_ = unix.SyncFileRange(w.fd, w.synced, end-w.synced, unix.SYNC_FILE_RANGE_WRITE)
		w.synced = end
	}
	return nil
}

// writeAt writes buf[i:j] at off+i. With O_DIRECT a last block that ends
// unaligned is written padded with zeros (buf has room: it is a whole
// buffer); a write O_DIRECT refuses is written again through the page
// cache, which then serves the rest of the copy.
func (w *writer) writeAt(buf []byte, i, j int, off int64) error {
	if w.direct {
		pj := (j + directAlign - 1) &^ (directAlign - 1)
		clear(buf[j:pj])
		_, err := w.f.WriteAt(buf[i:pj], off+int64(i))
		if err == nil || !errors.Is(err, unix.EINVAL) {
			return err
		}
		w.restore()
	}
	_, err := w.f.WriteAt(buf[i:j], off+int64(i))
	return err
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
