// Package qcow2 reads the header and the tables of a qcow2 file in
// process, without QEMU, so that vmpod can decide what a downloaded file is
// before any qemu-img sees it (qemu-img is then always told the format
// with -f, never left to probe it) and whether the file is complete by its
// own tables: every table and every cluster the image refers to must lie
// inside the file. That catches a download cut short, which `qemu-img info`
// accepts and `qemu-img check` misses when less than a cluster is missing.
//
// The format is QEMU's docs/interop/qcow2.txt. Limits follow QEMU's
// (cluster size 512 B to 2 MiB, an L1 table of at most 32 MiB, a refcount
// table of at most 8 MiB, at most 65536 snapshots), so a file QEMU would
// refuse is refused here, and a crafted file cannot make the walk read
// more than the file or allocate more than a few tens of MiB. Every table
// cluster is read at most once.
//
// Errors about the content wrap errdefs.ErrInvalidArgument and say what is
// wrong; read errors of the file are returned as they are.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/containerd/errdefs"
)

// Magic starts every qcow2 file.
const Magic = "QFI\xfb"

// QEMU's limits (block/qcow2.h).
const (
	minClusterBits   = 9
	maxClusterBits   = 21
	maxL1Bytes       = 32 << 20
	maxRefTableBytes = 8 << 20
	maxSnapshots     = 65536
	maxBackingName   = 1023
	// offsetMask selects the host offset of L1, L2 and refcount table
	// entries (bits 9-55).
	offsetMask = 0x00fffffffffffe00
)

// Incompatible feature bits.
const (
	IncompatDirty            = 1 << 0
	IncompatCorrupt          = 1 << 1
	IncompatExternalDataFile = 1 << 2
	IncompatCompressionType  = 1 << 3
	IncompatExtendedL2       = 1 << 4
	knownIncompat            = IncompatDirty | IncompatCorrupt | IncompatExternalDataFile | IncompatCompressionType | IncompatExtendedL2
)

// Header extension types that matter here.
const (
	extEnd           = 0x00000000
	extBitmaps       = 0x23852875
	extDataFile      = 0x44415441
	extEncryption    = 0x0537be77
	bitmapsExtLength = 24
)

// Header is the part of a qcow2 header vmpod looks at.
type Header struct {
	Version       uint32
	ClusterBits   uint32
	VirtualSize   uint64
	BackingOffset uint64
	BackingSize   uint32
	// BackingFile is the backing file name when BackingOffset is set (at
	// most 1023 bytes, as QEMU reads it).
	BackingFile      string
	CryptMethod      uint32
	L1Size           uint32
	L1Offset         uint64
	RefTableOffset   uint64
	RefTableClusters uint32
	NbSnapshots      uint32
	SnapshotsOffset  uint64
	Incompatible     uint64
	RefcountOrder    uint32
	HeaderLength     uint32
	// CompressionType is 0 (zlib, raw deflate) or 1 (zstd) for compressed
	// clusters.
	CompressionType uint8
	// DataFile is set when a header extension names an external data file.
	DataFile string
	// EncryptionHeader is set when a header extension describes LUKS
	// encryption.
	EncryptionHeader bool
	// bitmaps is the bitmap directory (offset, size) when the image has
	// persistent dirty bitmaps.
	bitmapsOffset, bitmapsSize uint64
}

// ClusterSize is 1 << ClusterBits.
func (h Header) ClusterSize() uint64 { return 1 << h.ClusterBits }

// l2EntrySize is 16 with extended L2 entries (subclusters), else 8.
func (h Header) l2EntrySize() uint64 {
	if h.Incompatible&IncompatExtendedL2 != 0 {
		return 16
	}
	return 8
}

// HasMagic tells whether head (the first bytes of a file) starts like a
// qcow2 file.
func HasMagic(head []byte) bool { return strings.HasPrefix(string(head), Magic) }

// ErrIncomplete is wrapped by the errors of a file that ends before what
// its tables refer to: most likely a download cut short.
var ErrIncomplete = errors.New("the file ends before what its tables refer to")

func invalid(format string, a ...any) error {
	return fmt.Errorf("qcow2: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// incomplete is invalid, marked ErrIncomplete too.
func incomplete(format string, a ...any) error {
	return fmt.Errorf("qcow2: "+format+": %w: %w", append(a, ErrIncomplete, errdefs.ErrInvalidArgument)...)
}

// ReadHeader reads and validates the header of the qcow2 file r of size
// bytes: its fields, its extensions and its backing file name. It does not
// look at the tables (Check does).
func ReadHeader(r io.ReaderAt, size int64) (Header, error) {
	var h Header
	buf := make([]byte, 105)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return h, err
	}
	if n < 4 || string(buf[:4]) != Magic {
		return h, invalid("the file lacks the qcow2 magic")
	}
	if n < 72 {
		return h, incomplete("the file is too short for a header")
	}
	be := binary.BigEndian
	h.Version = be.Uint32(buf[4:])
	h.BackingOffset = be.Uint64(buf[8:])
	h.BackingSize = be.Uint32(buf[16:])
	h.ClusterBits = be.Uint32(buf[20:])
	h.VirtualSize = be.Uint64(buf[24:])
	h.CryptMethod = be.Uint32(buf[32:])
	h.L1Size = be.Uint32(buf[36:])
	h.L1Offset = be.Uint64(buf[40:])
	h.RefTableOffset = be.Uint64(buf[48:])
	h.RefTableClusters = be.Uint32(buf[56:])
	h.NbSnapshots = be.Uint32(buf[60:])
	h.SnapshotsOffset = be.Uint64(buf[64:])
	switch h.Version {
	case 2:
		h.HeaderLength, h.RefcountOrder = 72, 4
	case 3:
		if n < 104 {
			return h, incomplete("the file is too short for a version 3 header")
		}
		h.Incompatible = be.Uint64(buf[72:])
		h.RefcountOrder = be.Uint32(buf[96:])
		h.HeaderLength = be.Uint32(buf[100:])
		if h.HeaderLength > 104 && n > 104 {
			h.CompressionType = buf[104]
		}
	default:
		return h, invalid("unsupported version %d (QEMU knows 2 and 3)", h.Version)
	}
	if h.ClusterBits < minClusterBits || h.ClusterBits > maxClusterBits {
		return h, invalid("cluster_bits %d is outside %d..%d", h.ClusterBits, minClusterBits, maxClusterBits)
	}
	if h.VirtualSize > math.MaxInt64 {
		// Nothing addresses more (QEMU's lengths are int64_t), and sums
		// with the virtual size must not wrap.
		return h, invalid("virtual size %d is above 2^63-1 bytes", h.VirtualSize)
	}
	cs := h.ClusterSize()
	if h.Version == 3 && (h.HeaderLength < 104 || h.HeaderLength%8 != 0 || uint64(h.HeaderLength) > cs) {
		return h, invalid("header_length %d is not a multiple of 8 between 104 and the cluster size", h.HeaderLength)
	}
	if h.RefcountOrder > 6 {
		return h, invalid("refcount_order %d is above 6", h.RefcountOrder)
	}
	if h.CompressionType > 1 || (h.CompressionType != 0) != (h.Incompatible&IncompatCompressionType != 0) {
		return h, invalid("compression type %d does not match the compression type feature bit", h.CompressionType)
	}
	if bad := h.Incompatible &^ knownIncompat; bad != 0 {
		return h, invalid("unknown incompatible features %#x", bad)
	}
	if uint64(h.HeaderLength) > uint64(size) {
		return h, incomplete("the file (%d bytes) ends inside its %d-byte header", size, h.HeaderLength)
	}
	if err := h.readExtensions(r, size); err != nil {
		return h, err
	}
	if h.BackingOffset != 0 {
		if err := h.readBackingName(r, size); err != nil {
			return h, err
		}
	}
	return h, nil
}

// readExtensions walks the header extensions that follow the header, up
// to the end of the first cluster (or the backing file name).
func (h *Header) readExtensions(r io.ReaderAt, size int64) error {
	end := h.ClusterSize()
	if h.BackingOffset != 0 && h.BackingOffset < end {
		end = h.BackingOffset
	}
	off := uint64(h.HeaderLength)
	be := binary.BigEndian
	for off+8 <= end {
		if off+8 > uint64(size) {
			return incomplete("the file (%d bytes) ends inside its header extensions", size)
		}
		var hd [8]byte
		if _, err := r.ReadAt(hd[:], int64(off)); err != nil {
			return err
		}
		typ, length := be.Uint32(hd[:4]), uint64(be.Uint32(hd[4:]))
		if typ == extEnd {
			return nil
		}
		data := off + 8
		if data+length > end {
			return invalid("header extension %#x at %d runs past the header area", typ, off)
		}
		if data+length > uint64(size) {
			return incomplete("the file (%d bytes) ends inside header extension %#x", size, typ)
		}
		switch typ {
		case extDataFile:
			name := make([]byte, min(length, maxBackingName))
			if _, err := r.ReadAt(name, int64(data)); err != nil {
				return err
			}
			h.DataFile = string(name)
			if h.DataFile == "" {
				h.DataFile = "(unnamed)"
			}
		case extEncryption:
			h.EncryptionHeader = true
		case extBitmaps:
			if length < bitmapsExtLength {
				return invalid("bitmaps extension of %d bytes is too short", length)
			}
			var b [bitmapsExtLength]byte
			if _, err := r.ReadAt(b[:], int64(data)); err != nil {
				return err
			}
			h.bitmapsSize, h.bitmapsOffset = be.Uint64(b[8:]), be.Uint64(b[16:])
		}
		off = data + (length+7)&^7
	}
	return nil
}

func (h *Header) readBackingName(r io.ReaderAt, size int64) error {
	n := min(uint64(h.BackingSize), maxBackingName)
	if h.BackingOffset+n > uint64(size) || h.BackingOffset > h.ClusterSize() {
		h.BackingFile = "(outside the header)"
		return nil
	}
	name := make([]byte, n)
	if _, err := r.ReadAt(name, int64(h.BackingOffset)); err != nil && err != io.EOF {
		return err
	}
	h.BackingFile = string(name)
	if h.BackingFile == "" {
		h.BackingFile = "(empty name)"
	}
	return nil
}
