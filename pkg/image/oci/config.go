package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// maxConfigSize bounds an image config blob, as containers/image does
// (iolimits.MaxConfigBodySize).
const maxConfigSize = 4 << 20

// imageConfig is the part of an OCI (or Docker schema 2) image config
// vmpod checks.
type imageConfig struct {
	RootFS *struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

// fetchConfig downloads the config blob the manifest of img names, checks
// it against its digest and size, and returns its diff_ids, one per layer
// of the manifest. The image ID is the config's digest, so the config is
// what makes it an identity: a manifest may claim any config digest (the
// digest of another image's config, or of a public disk image), and only
// the fetched, verified config ties that digest to the layers. Errors:
// InvalidArgument for a config that is not an image config of this
// manifest; Unavailable for bytes that do not match the digest; the
// registry's errors classified.
func (p *puller) fetchConfig(ctx context.Context, img *image) ([]digest.Digest, error) {
	info := img.config
	if info.Size > maxConfigSize {
		return nil, fmt.Errorf("the manifest %s of %s names a config of %d bytes, above the %d bytes vmpod reads: %w",
			img.id.ManifestDigest, img.named, info.Size, maxConfigSize, errdefs.ErrInvalidArgument)
	}
	rctx, cancel := p.opts.Limits.WithRequestTimeout(ctx)
	defer cancel()
	rc, _, err := img.src.GetBlob(rctx, types.BlobInfo{Digest: info.Digest, Size: info.Size, MediaType: info.MediaType}, none.NoCache)
	if err != nil {
		return nil, p.requestError(ctx, rctx, err, img, "fetch config")
	}
	defer rc.Close()
	var counter atomic.Int64
	vr := newVerifyingReader(rc, info.Digest, info.Size, maxConfigSize, &counter)
	blob, err := io.ReadAll(vr)
	if err != nil {
		if errors.Is(err, errCorrupt) || errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("config %s of %s: %w", info.Digest, img.named, err)
		}
		return nil, p.requestError(ctx, rctx, err, img, "read config")
	}
	var cfg imageConfig
	dec := json.NewDecoder(bytes.NewReader(blob))
	if err := dec.Decode(&cfg); err != nil || dec.More() {
		return nil, fmt.Errorf("the config %s of %s is not an image config (JSON): the manifest names a blob that is something else; nothing was stored: %w",
			info.Digest, img.named, errdefs.ErrInvalidArgument)
	}
	if cfg.RootFS == nil || cfg.RootFS.Type != "layers" {
		return nil, fmt.Errorf("the config %s of %s has no rootfs of type \"layers\"; it is not the config of a container image: %w",
			info.Digest, img.named, errdefs.ErrInvalidArgument)
	}
	if len(cfg.RootFS.DiffIDs) != len(img.layers) {
		return nil, fmt.Errorf("the config %s of %s lists %d layers (diff_ids) but the manifest %d: the image is inconsistent; nothing was stored: %w",
			info.Digest, img.named, len(cfg.RootFS.DiffIDs), len(img.layers), errdefs.ErrInvalidArgument)
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("the config %s of %s: diff_id %d %q: %v: %w", info.Digest, img.named, i, d, err, errdefs.ErrInvalidArgument)
		}
	}
	return cfg.RootFS.DiffIDs, nil
}

// requestError words an error of a request made under rctx (a request
// timeout derived from ctx): the caller's cancellation as it is, our own
// deadline as Unavailable, the rest classified.
func (p *puller) requestError(ctx, rctx context.Context, err error, img *image, what string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if te := transfer.OwnTimeout(rctx); te != nil {
		return fmt.Errorf("%s of %s: registry %s: %v; check the registry: %w", what, img.named, domainOf(img.named), te, errdefs.ErrUnavailable)
	}
	return classify(err, img.named, what, p.confDesc)
}
