package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"go.podman.io/image/v5/pkg/compression"
)

// maxFuzzLayer bounds what a fuzzed layer may inflate to (the pull's
// max_image_size plus slack, scaled down).
const maxFuzzLayer = 4 << 20

// memSink is a diskSink in memory.
type memSink struct{ content []byte }

func (s *memSink) take(r io.Reader, size int64) error {
	if size > maxFuzzLayer {
		return errors.New("too large")
	}
	b, err := io.ReadAll(r)
	s.content = b
	return err
}

// FuzzLayers reads two layer blobs as a pull does (decompressor
// detected from the data, bounded; tar; whiteouts of the upper layer
// applied to the lower), the upper one first, and checks:
//   - an error is one the pull reports as the image's fault (the
//     decompressor's or tar reader's, which readLayer classes
//     InvalidArgument, or scanLayer's own InvalidArgument);
//   - a disk found is a clean path under disk/, visible through the
//     upper layer, and the sink got the content of the last entry of
//     that path in its layer (read again with archive/tar);
//   - the message of a missing disk stays bounded (at most ten names
//     of each kind, each name bounded), however the layers name their
//     entries.
func FuzzLayers(f *testing.F) {
	add := func(c compressionKind, upper []entry, lower []entry) {
		f.Add(layerBlob(f, c, upper...), layerBlob(f, uncompressed, lower...))
	}
	add(gzipped, []entry{fileEntry("disk/.wh.a.qcow2", nil), fileEntry("disk/b.qcow2", []byte("upper"))}, []entry{fileEntry("disk/a.qcow2", []byte("lower"))})
	add(uncompressed, []entry{fileEntry("disk/a.qcow2", []byte("1")), fileEntry("./disk/a.qcow2", []byte("22"))}, nil)
	add(zstdCompressed, []entry{dirEntry("disk/"), fileEntry("disk/.wh..wh..opq", nil)}, []entry{fileEntry("disk/a.qcow2", []byte("x"))})
	add(uncompressed, []entry{fileEntry(".wh.disk", nil), fileEntry("etc/motd", []byte("hi"))}, []entry{fileEntry("disk/../disk/a", []byte("x"))})
	add(gzipped, []entry{{name: "disk", typeflag: tar.TypeSymlink, linkname: "/srv"}}, []entry{fileEntry("disk/a.qcow2", []byte("x"))})
	add(uncompressed, []entry{fileEntry("srv/a", []byte("x")), {name: "disk/a", typeflag: tar.TypeLink, linkname: "srv/a"}}, nil)
	add(uncompressed, []entry{fileEntry("disk/a", nil), fileEntry("disk/b", nil)}, nil)
	add(gzipped, []entry{fileEntry("disk/a", []byte("x")), {name: "disk/a", typeflag: tar.TypeSymlink, linkname: "/etc/shadow"}}, nil)
	add(uncompressed, []entry{fileEntry("disk/a", []byte("x")), dirEntry("disk/a/")}, []entry{fileEntry("disk/b", []byte("y"))})
	add(uncompressed, []entry{fileEntry("disk/d/a", []byte("x")), {name: "disk/d", typeflag: tar.TypeSymlink, linkname: "/"}}, nil)
	long := strings.Repeat("n", 4000)
	var many []entry
	for i := range 12 {
		many = append(many, fileEntry(long+string(rune('a'+i)), nil), entry{name: "disk/" + long + string(rune('a'+i)), typeflag: tar.TypeSymlink, linkname: long})
	}
	add(uncompressed, many, nil)
	f.Add([]byte("\x1f\x8b\x08\x00garbage"), []byte{})
	f.Fuzz(func(t *testing.T, upper, lower []byte) {
		ctx := context.Background()
		ov := newOverlay()
		found := &findings{maxListed: 10}
		var disk string
		var sink *memSink
		var from []byte
		for _, blob := range [][]byte{upper, lower} {
			sink = &memSink{}
			d, changes, err := scanBlob(ctx, blob, ov, sink, found)
			if err != nil {
				var ie *inflateError
				if !errdefs.IsInvalidArgument(err) && !errors.As(err, &ie) && !strings.HasPrefix(err.Error(), "read tar entry") && err.Error() != "too large" {
					t.Fatalf("layer error %v is not the image's fault", err)
				}
				if len(err.Error()) > 4096 {
					t.Fatalf("layer error of %d bytes", len(err.Error()))
				}
				return
			}
			if d != "" {
				disk, from = d, blob
				break
			}
			ov.merge(changes)
		}
		if disk == "" {
			if msg := found.noDiskError().Error(); len(msg) > 16<<10 {
				t.Fatalf("the no-disk error has %d bytes", len(msg))
			}
			return
		}
		if clean, ok := cleanEntryName(disk); !ok || clean != disk || payloadDir(disk) == "" || len(disk) == len(payloadDir(disk)) {
			t.Fatalf("disk %q is not a clean path under %s or %s", disk, diskDir, checkpointDir)
		}
		if bytes.Equal(from, lower) && !bytes.Equal(upper, lower) {
			upperOnly := newOverlay()
			if _, ch, err := scanBlob(ctx, upper, newOverlay(), &memSink{}, &findings{maxListed: 10}); err == nil {
				upperOnly.merge(ch)
			}
			if upperOnly.hidden(disk) {
				t.Fatalf("disk %q of the lower layer is hidden by the upper one", disk)
			}
		}
		want, ok := lastEntry(from, disk)
		if !ok || !bytes.Equal(sink.content, want) {
			t.Fatalf("the sink got %d bytes for %s, the layer's last entry has %d (%v)", len(sink.content), disk, len(want), ok)
		}
	})
}

// inflateError marks a layer that inflates beyond maxFuzzLayer.
type inflateError struct{}

func (inflateError) Error() string { return "layer inflates too far" }

// scanBlob decompresses blob as readLayer does and scans it.
func scanBlob(ctx context.Context, blob []byte, ov *overlay, sink diskSink, found *findings) (string, *overlay, error) {
	dec, _, err := compression.AutoDecompress(bytes.NewReader(blob))
	if err != nil {
		return "", nil, &inflateError{}
	}
	defer dec.Close()
	r := &limitedReader{r: dec, left: maxFuzzLayer}
	return scanLayer(ctx, tar.NewReader(r), ov, sink, found)
}

type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, &inflateError{}
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// lastEntry reads blob again and returns the content of its last entry
// named p (after cleaning), and whether that entry is a regular file
// still there (no later entry replaced a directory above it).
func lastEntry(blob []byte, p string) ([]byte, bool) {
	dec, _, err := compression.AutoDecompress(bytes.NewReader(blob))
	if err != nil {
		return nil, false
	}
	defer dec.Close()
	tr := tar.NewReader(&limitedReader{r: dec, left: maxFuzzLayer})
	var content []byte
	found := false
	for {
		h, err := tr.Next()
		if err != nil {
			return content, found
		}
		name, _ := cleanEntryName(h.Name)
		switch {
		case name == p:
			// A later entry of the path replaces the earlier one,
			// whatever its type.
			found = h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse
			if content, err = io.ReadAll(tr); err != nil {
				return nil, false
			}
		case strings.HasPrefix(p, name+"/") && h.Typeflag != tar.TypeDir:
			found = false // a directory above it replaced
		}
	}
}

// layerBlob builds a layer blob of entries, compressed as c.
func layerBlob(tb testing.TB, c compressionKind, entries ...entry) []byte {
	tb.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typeflag, Mode: 0o444, Linkname: e.linkname, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(e.content); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	var blob bytes.Buffer
	switch c {
	case gzipped:
		zw := gzip.NewWriter(&blob)
		zw.Write(tarBuf.Bytes())
		zw.Close()
	case zstdCompressed:
		zw, err := zstd.NewWriter(&blob)
		if err != nil {
			tb.Fatal(err)
		}
		zw.Write(tarBuf.Bytes())
		zw.Close()
	default:
		blob = tarBuf
	}
	return blob.Bytes()
}
