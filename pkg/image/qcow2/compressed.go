package qcow2

import (
	"bytes"
	"compress/flate"
	"io"

	"github.com/klauspost/compress/zstd"
)

// maxTails bounds the compressed clusters decompressed to check the end of
// a file: only the ones in its last sector can reach past it, and QEMU
// never puts more than a few there (a crafted file may point many L2
// entries at the same bytes).
const maxTails = 16

// inflateTail decompresses a compressed cluster that reaches the end of
// the file and requires a whole cluster out of it, as QEMU does when it
// reads the cluster (qcow2_decompress: the output buffer must be full).
// A file cut inside that cluster's data fails here.
func (w *walker) inflateTail(t tail) error {
	data, err := w.read(t.off, t.size)
	if err != nil {
		return err
	}
	var r io.Reader
	switch w.h.CompressionType {
	case 0:
		// QEMU writes raw deflate (zlib window bits -12).
		fr := flate.NewReader(bytes.NewReader(data))
		defer fr.Close()
		r = fr
	default:
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	out := make([]byte, w.cs)
	if _, err := io.ReadFull(r, out); err != nil {
		return incomplete("%s at offset %#x does not decompress to a whole cluster with the %d bytes left in the file (%v): the file is truncated or damaged",
			t.what, t.off, t.size, err)
	}
	return nil
}
