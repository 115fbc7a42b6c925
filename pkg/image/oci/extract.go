package oci

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"

	"github.com/vmpod/vmpod/pkg/image/diskcopy"
	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// diskFile is the disk extracted from an image.
type diskFile struct {
	path    string // inside the image: "/disk/x.qcow2"
	tmpFile string
	digest  string
	size    int64
}

// fileSink writes the disk entry into the temporary file.
type fileSink struct {
	f      *os.File
	h      hash.Hash
	size   int64
	digest string
	prog   *transfer.Progress
}

func (s *fileSink) take(r io.Reader) error {
	// A second entry of the same path replaces the first.
	if err := s.f.Truncate(0); err != nil {
		return &diskcopy.WriteError{Err: fmt.Errorf("reset disk file: %w", err)}
	}
	s.h.Reset()
	n, err := diskcopy.Copy(s.f, r, s.h, &s.prog.Written)
	if err != nil {
		return err
	}
	s.size = n
	s.digest = "sha256:" + hex.EncodeToString(s.h.Sum(nil))
	return nil
}

// extract streams img's layers, from the top one down, until one holds the
// disk, and writes the disk into a new file in TmpDir.
func (p *puller) extract(ctx context.Context, img *image) (_ diskFile, retErr error) {
	tmp, err := os.CreateTemp(p.opts.TmpDir, "oci-pull-*")
	if err != nil {
		return diskFile{}, fmt.Errorf("create download file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()

	// Total is an upper bound: the layers below the disk's are not read.
	prog := &transfer.Progress{Start: time.Now(), TrackWritten: true}
	for _, l := range img.layers {
		if l.Size > 0 {
			prog.Total += l.Size
		}
	}
	log := p.log.With("name", img.id.Name, "manifest", img.id.ManifestDigest)
	log.Info("pulling containerDisk", "layers", len(img.layers), "bytes_total", prog.Total)
	stop := prog.Report(log, p.opts.ProgressInterval)
	defer stop()
	if p.opts.Downloaded != nil {
		defer func() { p.opts.Downloaded(prog.Received.Load()) }()
	}

	sink := &fileSink{f: tmp, h: sha256.New(), prog: prog}
	found := &findings{maxListed: 10}
	ov := newOverlay()
	var disk string
	for i := len(img.layers) - 1; i >= 0 && disk == ""; i-- {
		l := img.layers[i]
		if l.EmptyLayer {
			continue
		}
		d, changes, err := p.readLayer(ctx, img, i, ov, sink, found)
		if err != nil {
			if ctx.Err() != nil {
				log.Info("pull cancelled, partial download removed")
				return diskFile{}, ctx.Err()
			}
			return diskFile{}, fmt.Errorf("layer %d (%s): %w", i+1, l.Digest, err)
		}
		disk = d
		if disk == "" {
			ov.merge(changes)
		}
	}
	if disk == "" {
		return diskFile{}, found.noDiskError()
	}
	if err := tmp.Sync(); err != nil {
		return diskFile{}, fmt.Errorf("sync disk file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return diskFile{}, fmt.Errorf("close disk file: %w", err)
	}
	n := prog.Received.Load()
	elapsed := time.Since(prog.Start)
	log.Info("containerDisk pulled", "disk", "/"+disk, "disk_digest", sink.digest, "disk_bytes", sink.size,
		"bytes", n, "seconds", fmt.Sprintf("%.1f", elapsed.Seconds()), "rate_mib_s", transfer.Rate(n, elapsed))
	return diskFile{path: "/" + disk, tmpFile: tmpName, digest: sink.digest, size: sink.size}, nil
}

// readLayer reads layer i of img through the digest check, the
// decompressor and the tar reader (scanLayer), to the end of the blob so
// that its digest is checked even when the disk came early.
func (p *puller) readLayer(ctx context.Context, img *image, i int, ov *overlay, sink *fileSink, found *findings) (string, *overlay, error) {
	l := img.layers[i]
	rc, _, err := img.src.GetBlob(ctx, blobInfo(l), none.NoCache)
	if err != nil {
		return "", nil, classify(err, img.named, "fetch layer", p.confDesc)
	}
	defer rc.Close()
	vr := newVerifyingReader(rc, l.Digest, l.Size, &sink.prog.Received)
	// readErr prefers the blob's own error (network, digest) to what the
	// decompressor or tar reader made of it.
	readErr := func(err error) error {
		if vErr, _ := vr.state(); vErr != nil {
			if errors.Is(vErr, errCorrupt) {
				return vErr
			}
			return classify(vErr, img.named, "read layer", p.confDesc)
		}
		return fmt.Errorf("%w: the layer is not a (compressed) tar archive: %w", err, errdefs.ErrInvalidArgument)
	}
	dec, _, err := compression.AutoDecompress(vr)
	if err != nil {
		return "", nil, readErr(err)
	}
	defer dec.Close()
	// Only Read: pgzip's WriteTo (which io.Copy would pick) panics when
	// called after Read has drained its current block (pgzip v1.2.7).
	r := struct{ io.Reader }{dec}
	disk, changes, err := scanLayer(ctx, tar.NewReader(r), ov, sink, found)
	if err != nil {
		if errdefs.IsInvalidArgument(err) || ctx.Err() != nil || isWriteError(err) {
			return "", nil, err
		}
		return "", nil, readErr(err)
	}
	// Read what follows the tar's end (padding, the compressor's trailer)
	// so the whole blob goes through the verifier.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return "", nil, readErr(err)
	}
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return "", nil, readErr(err)
	}
	if vErr, ok := vr.state(); vErr != nil || !ok {
		return "", nil, readErr(fmt.Errorf("blob %s not read to its end", l.Digest))
	}
	return disk, changes, nil
}

// isWriteError reports a local file error, which is neither the
// registry's nor the image's fault.
func isWriteError(err error) bool {
	var w *diskcopy.WriteError
	return errors.As(err, &w)
}
