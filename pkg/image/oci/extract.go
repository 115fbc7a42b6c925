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
	digest "github.com/opencontainers/go-digest"
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
	lim    transfer.Limits
}

func (s *fileSink) take(r io.Reader, size int64) error {
	// The entry's header gives its size: refuse a disk too large, or one
	// that does not fit, before writing a byte of it.
	if size > s.lim.MaxImageSize {
		return s.lim.TooLarge("the disk file", size)
	}
	if err := s.lim.Space(size); err != nil {
		return err
	}
	// A second entry of the same path replaces the first.
	if err := s.f.Truncate(0); err != nil {
		return &diskcopy.WriteError{Err: fmt.Errorf("reset disk file: %w", err)}
	}
	s.h.Reset()
	n, err := diskcopy.Copy(s.f, r, s.h, &s.prog.Written, diskcopy.Limit{
		Max: s.lim.MaxImageSize, Every: transfer.SpaceCheckInterval,
		Check: func(int64) error { return s.lim.Space(0) },
	})
	var tooLarge *diskcopy.TooLargeError
	if errors.As(err, &tooLarge) {
		return s.lim.TooLarge("the disk file", tooLarge.Max+1)
	}
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
	lim := p.opts.Limits
	for i, l := range img.layers {
		if l.Size > lim.MaxImageSize {
			return diskFile{}, lim.TooLarge(fmt.Sprintf("layer %d (%s)", i+1, l.Digest), l.Size)
		}
		if l.Size > 0 {
			prog.Total += l.Size
		}
	}
	// No byte from the registry for pull_stall_timeout (waiting for a
	// blob's answer included) ends the pull.
	pctx := ctx
	ctx, stopWatch := lim.WatchStall(ctx, &prog.Received)
	defer stopWatch()
	log := p.log.With("name", img.id.Name, "manifest", img.id.ManifestDigest)
	log.Info("pulling image", "layers", len(img.layers), "bytes_total", prog.Total)
	stop := prog.Report(log, p.opts.ProgressInterval)
	defer stop()
	if p.opts.Downloaded != nil {
		defer func() { p.opts.Downloaded(prog.Received.Load()) }()
	}

	sink := &fileSink{f: tmp, h: sha256.New(), prog: prog, lim: lim}
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
			if pctx.Err() != nil {
				log.Info("pull cancelled, partial download removed")
				return diskFile{}, pctx.Err()
			}
			if te := transfer.OwnTimeout(ctx); te != nil {
				return diskFile{}, fmt.Errorf("layer %d (%s) of %s: registry %s: %v; partial download removed, retry the pull: %w",
					i+1, l.Digest, img.named, domainOf(img.named), te, errdefs.ErrUnavailable)
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
	what := "containerDisk pulled"
	if payloadDir(disk) == checkpointDir {
		what = "checkpoint image pulled"
	}
	log.Info(what, "disk", "/"+disk, "disk_digest", sink.digest, "disk_bytes", sink.size,
		"bytes", n, "seconds", fmt.Sprintf("%.1f", elapsed.Seconds()), "rate_mib_s", transfer.Rate(n, elapsed))
	return diskFile{path: "/" + disk, tmpFile: tmpName, digest: sink.digest, size: sink.size}, nil
}

// layerSlack is what a layer's tar stream may hold beyond max_image_size:
// headers and padding around a disk of exactly that size.
const layerSlack = 1 << 20

// readLayer reads layer i of img through the digest check, the
// decompressor (bounded: a small blob may not inflate beyond
// max_image_size) and the tar reader (scanLayer), to the end of the blob
// so that its digest, and the uncompressed stream's diff_id, are checked
// even when the disk came early.
func (p *puller) readLayer(ctx context.Context, img *image, i int, ov *overlay, sink *fileSink, found *findings) (string, *overlay, error) {
	l := img.layers[i]
	lim := p.opts.Limits
	rc, _, err := img.src.GetBlob(ctx, blobInfo(l), none.NoCache)
	if err != nil {
		return "", nil, classify(err, img.named, "fetch layer", p.confDesc)
	}
	defer rc.Close()
	vr := newVerifyingReader(rc, l.Digest, l.Size, lim.MaxImageSize, &sink.prog.Received)
	// readErr prefers the blob's own error (network, digest) to what the
	// decompressor or tar reader made of it.
	readErr := func(err error) error {
		if vErr, _ := vr.state(); vErr != nil {
			if errors.Is(vErr, errCorrupt) || errors.Is(vErr, errTooLarge) {
				return vErr
			}
			return classify(vErr, img.named, "read layer", p.confDesc)
		}
		if errors.Is(err, errInflated) {
			return lim.TooLarge(fmt.Sprintf("layer %d uncompressed", i+1), lim.MaxImageSize+layerSlack+1)
		}
		return fmt.Errorf("%w: the layer is not a (compressed) tar archive: %w", err, errdefs.ErrInvalidArgument)
	}
	dec, _, err := compression.AutoDecompress(vr)
	if err != nil {
		return "", nil, readErr(err)
	}
	defer dec.Close()
	// The uncompressed stream is what the config's diff_id names. Only
	// Read: pgzip's WriteTo (which io.Copy would pick) panics when called
	// after Read has drained its current block (pgzip v1.2.7).
	diffID := img.diffIDs[i]
	ur := &inflated{r: dec, h: diffID.Algorithm().Hash(), max: lim.MaxImageSize + layerSlack}
	r := struct{ io.Reader }{ur}
	disk, changes, err := scanLayer(ctx, tar.NewReader(r), ov, sink, found)
	if err != nil {
		if errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err) || ctx.Err() != nil || isWriteError(err) {
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
	if got := digest.NewDigest(diffID.Algorithm(), ur.h); got != diffID {
		return "", nil, fmt.Errorf("the layer's uncompressed content is %s but the config's diff_id for it is %s: the image is inconsistent (or forged); nothing was stored: %w",
			got, diffID, errdefs.ErrInvalidArgument)
	}
	return disk, changes, nil
}

// errInflated marks a layer that decompresses to more than the pull
// allows: a decompression bomb, or an image above max_image_size.
var errInflated = errors.New("layer decompresses beyond max_image_size")

// inflated passes a layer's uncompressed stream through, hashing it
// for the diff_id check and stopping it at max bytes.
type inflated struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	max int64
}

func (u *inflated) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.h.Write(p[:n])
	u.n += int64(n)
	if u.n > u.max {
		return n, errInflated
	}
	return n, err
}

// isWriteError reports a local file error, which is neither the
// registry's nor the image's fault.
func isWriteError(err error) bool {
	var w *diskcopy.WriteError
	return errors.As(err, &w)
}
