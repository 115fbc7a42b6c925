package qcow2

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/containerd/errdefs"
)

// Check reads the header of the qcow2 file r (size bytes) and walks its
// tables: the L1 tables of the image and of its internal snapshots, every
// L2 table they point to, the refcount table and its blocks, the snapshot
// table and the bitmap directory. Every one of them, and every data
// cluster an L2 table points to, must lie inside the file, at the
// alignment the format requires; so must a compressed cluster, up to the
// start of its last 512-byte sector (the compressed data may end anywhere
// in that sector). A file cut short fails with an error saying what lies
// past its end.
//
// Check does not judge what the image refers to outside itself (a backing
// file, an external data file) or whether it is encrypted; SelfContained
// does.
func Check(r io.ReaderAt, size int64) (Header, error) {
	h, err := ReadHeader(r, size)
	if err != nil {
		return h, err
	}
	w := &walker{r: r, h: h, size: uint64(size), cs: h.ClusterSize()}
	w.seen = make([]uint64, (w.size/w.cs+64)/64)
	if err := w.region("the L1 table", h.L1Offset, uint64(h.L1Size)*8, true); err != nil {
		return h, err
	}
	if uint64(h.L1Size)*8 > maxL1Bytes {
		return h, invalid("the L1 table has %d entries, above QEMU's limit of %d", h.L1Size, maxL1Bytes/8)
	}
	if need := h.l1Needed(); uint64(h.L1Size) < need {
		return h, invalid("the L1 table has %d entries, too few for the virtual size %d (%d needed)", h.L1Size, h.VirtualSize, need)
	}
	if err := w.walkL1("the image", h.L1Offset, h.L1Size); err != nil {
		return h, err
	}
	if err := w.refcounts(); err != nil {
		return h, err
	}
	if err := w.snapshots(); err != nil {
		return h, err
	}
	if h.bitmapsOffset != 0 || h.bitmapsSize != 0 {
		if err := w.region("the bitmap directory", h.bitmapsOffset, h.bitmapsSize, false); err != nil {
			return h, err
		}
	}
	for _, t := range w.tails {
		if err := w.inflateTail(t); err != nil {
			return h, err
		}
	}
	return h, nil
}

// SelfContained refuses an image that needs something besides its own
// file or a key to be read, or that QEMU marked as damaged. Errors wrap
// errdefs.ErrInvalidArgument.
func (h Header) SelfContained() error {
	switch {
	case h.BackingOffset != 0:
		return fmt.Errorf("image has a backing file %q; images that refer to other files are refused because the guest would read that host file: %w",
			h.BackingFile, errdefs.ErrInvalidArgument)
	case h.Incompatible&IncompatExternalDataFile != 0 || h.DataFile != "":
		return fmt.Errorf("image has an external data file %q; images that refer to other files are refused: %w", h.DataFile, errdefs.ErrInvalidArgument)
	case h.CryptMethod != 0 || h.EncryptionHeader:
		return fmt.Errorf("image is encrypted; vmpod has no key to open it: %w", errdefs.ErrInvalidArgument)
	case h.Incompatible&IncompatCorrupt != 0:
		return fmt.Errorf("QEMU marked the image corrupt; repair it with 'qemu-img check -r all' before publishing it: %w", errdefs.ErrInvalidArgument)
	case h.Incompatible&IncompatDirty != 0:
		return fmt.Errorf("the image is dirty (it was not closed cleanly, its refcounts may be wrong); run 'qemu-img check -r all' on it before publishing it: %w",
			errdefs.ErrInvalidArgument)
	}
	return nil
}

// l1Needed is the number of L1 entries the virtual size needs.
func (h Header) l1Needed() uint64 {
	l2Entries := h.ClusterSize() / h.l2EntrySize()
	perL1 := h.ClusterSize() * l2Entries // bytes of guest disk one L2 table maps
	return (h.VirtualSize + perL1 - 1) / perL1
}

// walker walks the tables of one file.
type walker struct {
	r    io.ReaderAt
	h    Header
	size uint64
	cs   uint64
	// seen marks the clusters whose table was read, so that a crafted
	// file whose L1 entries all point at one L2 table is read once.
	seen []uint64
	// tails are the compressed clusters whose last sector the file ends
	// in: only decompressing them tells whether their data is whole.
	tails []tail
}

// tail is a compressed cluster that reaches the end of the file.
type tail struct {
	what      string
	off, size uint64
}

// region checks that [off, off+n) lies inside the file; aligned asks for
// a cluster-aligned off.
func (w *walker) region(what string, off, n uint64, aligned bool) error {
	if aligned && off%w.cs != 0 {
		return invalid("%s at offset %#x is not aligned to the %d-byte clusters", what, off, w.cs)
	}
	if off > w.size || n > w.size-off {
		return incomplete("%s at offset %#x (%d bytes) lies past the end of the %d-byte file: the file is truncated or damaged", what, off, n, w.size)
	}
	return nil
}

// firstVisit marks the cluster at off as read and reports whether it was
// not before.
func (w *walker) firstVisit(off uint64) bool {
	i := off / w.cs
	word, bit := i/64, uint64(1)<<(i%64)
	if w.seen[word]&bit != 0 {
		return false
	}
	w.seen[word] |= bit
	return true
}

// read reads n bytes at off, which region has checked.
func (w *walker) read(off, n uint64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := w.r.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("read %d bytes at offset %#x: %w", n, off, err)
	}
	return b, nil
}

// walkL1 checks the L1 table at off with n entries and every L2 table and
// cluster it reaches; of names it (the image or a snapshot) for messages.
func (w *walker) walkL1(of string, off uint64, n uint32) error {
	l1, err := w.read(off, uint64(n)*8)
	if err != nil {
		return err
	}
	for i := range uint64(n) {
		l2 := binary.BigEndian.Uint64(l1[i*8:]) & offsetMask
		if l2 == 0 {
			continue
		}
		what := fmt.Sprintf("L2 table %d of %s", i, of)
		if err := w.region(what, l2, w.cs, true); err != nil {
			return err
		}
		if !w.firstVisit(l2) {
			continue
		}
		if err := w.walkL2(what, l2); err != nil {
			return err
		}
	}
	return nil
}

// walkL2 checks the clusters the L2 table at off points to.
func (w *walker) walkL2(what string, off uint64) error {
	table, err := w.read(off, w.cs)
	if err != nil {
		return err
	}
	external := w.h.Incompatible&IncompatExternalDataFile != 0
	step := w.h.l2EntrySize()
	// Compressed cluster descriptors (QEMU's qcow2_parse_compressed_l2_entry):
	// the host offset in the low csizeShift bits, then the count of
	// additional 512-byte sectors.
	csizeShift := 62 - (w.h.ClusterBits - 8)
	offMask := uint64(1)<<csizeShift - 1
	sectMask := uint64(1)<<(w.h.ClusterBits-8) - 1
	for i := uint64(0); i+step <= w.cs; i += step {
		e := binary.BigEndian.Uint64(table[i:])
		if e&(1<<62) != 0 {
			coff := e & offMask
			nsect := (e>>csizeShift)&sectMask + 1
			csize := nsect*512 - coff%512
			// The last sector must start inside the file.
			if coff >= w.size || coff+csize-min(csize, 512) >= w.size {
				return incomplete("compressed cluster %d of %s at offset %#x (%d bytes) lies past the end of the %d-byte file: the file is truncated or damaged",
					i/step, what, coff, csize, w.size)
			}
			if coff+csize > w.size && len(w.tails) < maxTails {
				w.tails = append(w.tails, tail{what: fmt.Sprintf("compressed cluster %d of %s", i/step, what), off: coff, size: w.size - coff})
			}
			continue
		}
		data := e & offsetMask
		// An external data file holds the data; a cluster with the zero
		// flag reads as zeros whatever its offset (a preallocation).
		if data == 0 || external || (step == 8 && e&1 != 0) {
			continue
		}
		need := w.cs
		if step == 16 {
			// Extended L2: only the allocated subclusters (the low 32
			// bits of the bitmap) are read, and a file may end after the
			// last of them.
			alloc := uint32(binary.BigEndian.Uint64(table[i+8:]))
			if alloc == 0 {
				continue
			}
			need = uint64(32-bits.LeadingZeros32(alloc)) * (w.cs / 32)
		}
		if data%w.cs != 0 {
			return invalid("data cluster %d of %s at offset %#x is not aligned to the %d-byte clusters", i/step, what, data, w.cs)
		}
		if err := w.region(fmt.Sprintf("data cluster %d of %s", i/step, what), data, need, false); err != nil {
			return err
		}
	}
	return nil
}

// refcounts checks the refcount table and its blocks.
func (w *walker) refcounts() error {
	n := uint64(w.h.RefTableClusters) * w.cs
	if n > maxRefTableBytes {
		return invalid("the refcount table has %d clusters, above QEMU's limit of %d bytes", w.h.RefTableClusters, maxRefTableBytes)
	}
	if n == 0 {
		return invalid("the image has no refcount table")
	}
	if err := w.region("the refcount table", w.h.RefTableOffset, n, true); err != nil {
		return err
	}
	table, err := w.read(w.h.RefTableOffset, n)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i += 8 {
		b := binary.BigEndian.Uint64(table[i:]) &^ 0x1ff
		if b == 0 {
			continue
		}
		if err := w.region(fmt.Sprintf("refcount block %d", i/8), b, w.cs, true); err != nil {
			return err
		}
	}
	return nil
}

// snapshots checks the snapshot table and walks each snapshot's L1 table.
func (w *walker) snapshots() error {
	n := w.h.NbSnapshots
	if n == 0 {
		return nil
	}
	if n > maxSnapshots {
		return invalid("%d snapshots, above QEMU's limit of %d", n, maxSnapshots)
	}
	if w.h.SnapshotsOffset%8 != 0 {
		return invalid("the snapshot table at offset %#x is not 8-byte aligned", w.h.SnapshotsOffset)
	}
	off := w.h.SnapshotsOffset
	be := binary.BigEndian
	for i := range n {
		what := fmt.Sprintf("snapshot %d", i)
		if err := w.region(what+"'s header", off, 40, false); err != nil {
			return err
		}
		hd, err := w.read(off, 40)
		if err != nil {
			return err
		}
		l1Off, l1Size := be.Uint64(hd[0:]), be.Uint32(hd[8:])
		idLen, nameLen := uint64(be.Uint16(hd[12:])), uint64(be.Uint16(hd[14:]))
		extra := uint64(be.Uint32(hd[36:]))
		if extra > 1024 {
			return invalid("%s has %d bytes of extra data; QEMU allows at most 1024", what, extra)
		}
		entry := (40 + extra + idLen + nameLen + 7) &^ 7
		if err := w.region(what+"'s header", off, entry, false); err != nil {
			return err
		}
		if uint64(l1Size)*8 > maxL1Bytes {
			return invalid("%s has an L1 table of %d entries, above QEMU's limit", what, l1Size)
		}
		if err := w.region("the L1 table of "+what, l1Off, uint64(l1Size)*8, true); err != nil {
			return err
		}
		if err := w.walkL1(what, l1Off, l1Size); err != nil {
			return err
		}
		off += entry
	}
	return nil
}
