package oci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/types"

	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/logging"
)

// domainOf is the registry host of n, for messages.
func domainOf(n reference.Named) string { return reference.Domain(n) }

// Identity names one image as found in a registry.
type Identity struct {
	// Name is the fully-qualified reference pulled, after short-name
	// resolution: "quay.io/vms/debian:12", "registry:5000/vms/debian@sha256:...".
	Name string
	// RepoTag is repo:tag, or "" when the image was pulled by digest.
	RepoTag string
	// RepoDigest is repo@ManifestDigest.
	RepoDigest string
	// ManifestDigest is the digest of the image manifest, after choosing
	// the platform's entry of a multi-arch index.
	ManifestDigest string
	// IndexDigest is the digest of the multi-arch index the name pointed
	// at, or "" when it pointed at an image manifest. Note that containerd
	// reports repo@IndexDigest as the repo digest of such an image; a pull
	// by repo@IndexDigest should find this image.
	IndexDigest string
	// ConfigDigest is the digest of the image config: the image ID.
	// Resolve reports what the manifest claims; Pull verifies it (the
	// config blob is fetched and matches it, and every layer Pull reads
	// matches the config's diff_id), so only a Pull's ConfigDigest may be
	// trusted as an identity.
	ConfigDigest string
}

// Kind is what an image's payload file is.
type Kind string

const (
	// KindDisk is a containerDisk: the file is under /disk/.
	KindDisk Kind = "disk"
	// KindCheckpoint is a checkpoint image: the file, under /checkpoint/,
	// is a vmpod checkpoint archive (docs/snapshots.md).
	KindCheckpoint Kind = "checkpoint"
)

// Result is a pulled containerDisk or checkpoint image. Pull does not
// look inside the file: checking that it is a qcow2 or raw image, or a
// checkpoint archive, is the caller's job (pkg/image's DiskChecker,
// CheckpointChecker).
type Result struct {
	Identity
	// Kind says which directory the file was in.
	Kind Kind
	// DiskPath is where the file is inside the image, e.g.
	// "/disk/debian.qcow2" or "/checkpoint/web.tar".
	DiskPath string
	// TmpFile is the file in Options.TmpDir holding the disk, synced to
	// disk. The caller owns it: rename or remove it.
	TmpFile string
	// DiskDigest is "sha256:<hex>" of the disk file.
	DiskDigest string
	// Size is the disk file's size in bytes.
	Size int64
}

// Resolve looks ref up in its registry and returns the image's identity
// without downloading layers: a manifest (two for a multi-arch index), and
// nothing else. Errors are classified as Pull's.
func Resolve(ctx context.Context, ref string, auth *Auth, opts Options) (Identity, error) {
	p, err := newPuller(ctx, ref, auth, opts)
	if err != nil {
		return Identity{}, err
	}
	img, err := p.open(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("resolve image %q: %w", ref, err)
	}
	img.src.Close()
	return img.id, nil
}

// Pull downloads the containerDisk or checkpoint image ref names into a temporary file in
// opts.TmpDir and returns the file and the image's identity. auth may be
// nil. The config is fetched and verified, and so is every layer read,
// against its digest (compressed) and its diff_id (uncompressed): the
// ConfigDigest of the result is an identity of the disk. Cancelling ctx
// stops the pull and removes the file.
//
// Errors wrap an errdefs class: ErrInvalidArgument for a bad name, an
// ambiguous short name, an image that is not a containerDisk or
// checkpoint image (no file, or several, under /disk/ and /checkpoint/,
// naming them) or whose config does not describe its layers (a config
// that is no image config, a diff_id mismatch); ErrNotFound for a missing repository, tag or platform;
// ErrUnauthenticated for rejected credentials, ErrPermissionDenied for
// denied access or a blocked registry; ErrFailedPrecondition for TLS and
// registries.conf problems; ErrResourceExhausted for a blob, a layer or a
// disk above opts.Limits.MaxImageSize, or a disk that does not fit the
// free space; ErrUnavailable for an unreachable, failing, silent
// (pull_request_timeout) or stalled (pull_stall_timeout) registry and for
// blobs that do not match their digest.
func Pull(ctx context.Context, ref string, auth *Auth, opts Options) (Result, error) {
	p, err := newPuller(ctx, ref, auth, opts)
	if err != nil {
		return Result{}, err
	}
	img, err := p.open(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("pull image %q: %w", ref, err)
	}
	defer img.src.Close()
	if img.diffIDs, err = p.fetchConfig(ctx, img); err != nil {
		return Result{}, fmt.Errorf("pull image %q: %w", ref, err)
	}
	d, err := p.extract(ctx, img)
	if err != nil {
		if img.id.Name != ref {
			return Result{}, fmt.Errorf("pull image %q (%s): %w", ref, img.id.Name, err)
		}
		return Result{}, fmt.Errorf("pull image %q: %w", ref, err)
	}
	kind := KindDisk
	if strings.HasPrefix(d.path, "/"+checkpointDir) {
		kind = KindCheckpoint
	}
	return Result{Identity: img.id, Kind: kind, DiskPath: d.path, TmpFile: d.tmpFile, DiskDigest: d.digest, Size: d.size}, nil
}

// puller holds one pull's settings.
type puller struct {
	ref      string
	auth     *Auth
	opts     Options
	log      *slog.Logger
	sys      *types.SystemContext // without credentials
	confDesc string               // the registries.conf files, for messages
}

func newPuller(ctx context.Context, ref string, auth *Auth, opts Options) (*puller, error) {
	opts = opts.withDefaults()
	opts.Limits = opts.Limits.WithDefaults()
	log := opts.Log
	if log == nil {
		log = logging.From(ctx)
	}
	sys, err := opts.systemContext()
	if err != nil {
		return nil, err
	}
	return &puller{
		ref:      ref,
		auth:     auth,
		opts:     opts,
		log:      log.With(logging.KeyImage, ref),
		sys:      sys,
		confDesc: opts.RegistriesConf + " (and " + opts.RegistriesConfDir + "/*.conf)",
	}, nil
}

// image is an opened image: its source and chosen manifest, and once
// fetched the diff_ids of its config.
type image struct {
	src     types.ImageSource
	named   reference.Named
	id      Identity
	config  types.BlobInfo
	layers  []manifest.LayerInfo
	diffIDs []digest.Digest
}

// open resolves p.ref to its candidates and opens the first that works.
func (p *puller) open(ctx context.Context) (*image, error) {
	cands, err := candidates(p.sys, p.ref, p.confDesc)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range cands {
		img, err := p.openOne(ctx, n)
		if err == nil {
			if len(cands) > 1 || n.String() != p.ref {
				p.log.Info("image name resolved", "name", n.String())
			}
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if len(cands) > 1 {
			p.log.Info("short-name candidate failed", "name", n.String(), logging.KeyErr, err)
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, joinCandidateErrors(p.ref, errs)
}

// joinCandidateErrors reports the failures of all candidates of a short
// name under one class: NotFound if the image was nowhere, else the class
// of the first other failure (a rejected credential, an unreachable
// registry), which is what the user has to fix.
func joinCandidateErrors(ref string, errs []error) error {
	msgs := make([]string, len(errs))
	var class error = errdefs.ErrNotFound
	found := false
	for i, e := range errs {
		msgs[i] = e.Error()
		if !found && !errdefs.IsNotFound(e) {
			for _, c := range []error{errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied, errdefs.ErrFailedPrecondition,
				errdefs.ErrUnavailable, errdefs.ErrInvalidArgument} {
				if errors.Is(e, c) {
					class, found = c, true
					break
				}
			}
		}
	}
	return fmt.Errorf("short name %q: every unqualified-search registry failed: [%s]: %w", ref, strings.Join(msgs, "; "), class)
}

// openOne opens n's image source, reads its manifest and, for an index,
// the manifest of the wanted platform, all within pull_request_timeout.
func (p *puller) openOne(ctx context.Context, n reference.Named) (_ *image, retErr error) {
	if err := checkBlocked(p.sys, n, p.confDesc); err != nil {
		return nil, err
	}
	pctx := ctx
	ctx, cancel := p.opts.Limits.WithRequestTimeout(ctx)
	defer cancel()
	classifyErr := func(err error, what string) error {
		if pctx.Err() != nil {
			return pctx.Err()
		}
		if te := transfer.OwnTimeout(ctx); te != nil {
			return fmt.Errorf("%s of %s: registry %s: %v; check the registry: %w", what, n, reference.Domain(n), te, errdefs.ErrUnavailable)
		}
		return classify(err, n, what, p.confDesc)
	}
	sys, err := withAuth(p.sys, p.auth, reference.Domain(n), p.log)
	if err != nil {
		return nil, err
	}
	dref, err := docker.NewReference(n)
	if err != nil {
		return nil, fmt.Errorf("image name %s: %v: %w", n, err, errdefs.ErrInvalidArgument)
	}
	src, err := dref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, classifyErr(err, "fetch manifest")
	}
	defer func() {
		if retErr != nil {
			src.Close()
		}
	}()
	blob, mimeType, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, classifyErr(err, "fetch manifest")
	}
	top, err := manifest.Digest(blob)
	if err != nil {
		return nil, fmt.Errorf("digest manifest of %s: %w", n, err)
	}
	if d, ok := n.(reference.Digested); ok && d.Digest() != top {
		return nil, fmt.Errorf("the registry %s served a manifest with digest %s for %s; nothing was pulled: %w",
			reference.Domain(n), top, n, errdefs.ErrUnavailable)
	}
	id := Identity{Name: n.String(), ManifestDigest: top.String()}
	if t, ok := n.(reference.Tagged); ok {
		id.RepoTag = n.Name() + ":" + t.Tag()
	}

	if manifest.MIMETypeIsMultiImage(mimeType) {
		list, err := manifest.ListFromBlob(blob, mimeType)
		if err != nil {
			return nil, fmt.Errorf("parse index %s of %s: %v: %w", top, n, err, errdefs.ErrInvalidArgument)
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return nil, fmt.Errorf("%s is a multi-arch image without a %s entry (it has %s); push one or set the platform: %w",
				n, p.platform(), platforms(list), errdefs.ErrNotFound)
		}
		if err := inst.Validate(); err != nil {
			return nil, fmt.Errorf("the index %s of %s names the %s manifest by an invalid digest %q: %v: %w",
				top, n, p.platform(), bounded(inst.String()), err, errdefs.ErrInvalidArgument)
		}
		blob, mimeType, err = src.GetManifest(ctx, &inst)
		if err != nil {
			return nil, classifyErr(err, "fetch manifest "+inst.String())
		}
		if ok, err := manifest.MatchesDigest(blob, inst); err != nil || !ok {
			return nil, fmt.Errorf("the registry %s served a manifest that does not match %s for %s; nothing was pulled: %w",
				reference.Domain(n), inst, n, errdefs.ErrUnavailable)
		}
		id.IndexDigest = top.String()
		id.ManifestDigest = inst.String()
	}
	id.RepoDigest = n.Name() + "@" + id.ManifestDigest

	switch manifest.NormalizedMIMEType(mimeType) {
	case manifest.DockerV2Schema1MediaType, manifest.DockerV2Schema1SignedMediaType:
		return nil, fmt.Errorf("%s has a Docker schema 1 manifest, which has no config; re-push it as a Docker schema 2 or OCI image: %w",
			n, errdefs.ErrInvalidArgument)
	}
	m, err := manifest.FromBlob(blob, mimeType)
	if err != nil {
		return nil, fmt.Errorf("parse manifest %s of %s (%s): %v: %w", id.ManifestDigest, n, mimeType, err, errdefs.ErrInvalidArgument)
	}
	cfg := m.ConfigInfo()
	if cfg.Digest == "" {
		return nil, fmt.Errorf("manifest %s of %s names no config: %w", id.ManifestDigest, n, errdefs.ErrInvalidArgument)
	}
	if err := cfg.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("manifest %s of %s: config digest %q: %v: %w", id.ManifestDigest, n, cfg.Digest, err, errdefs.ErrInvalidArgument)
	}
	id.ConfigDigest = cfg.Digest.String()
	layers := m.LayerInfos()
	for _, l := range layers {
		if strings.HasSuffix(l.MediaType, "+encrypted") {
			return nil, fmt.Errorf("%s has an encrypted layer (%s), which vmpod cannot decrypt: %w", n, l.MediaType, errdefs.ErrNotImplemented)
		}
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest %s of %s: layer digest %q: %v: %w", id.ManifestDigest, n, l.Digest, err, errdefs.ErrInvalidArgument)
		}
	}
	return &image{src: src, named: n, id: id, config: cfg, layers: layers}, nil
}

func (p *puller) platform() string {
	s := p.opts.OS + "/" + p.opts.Arch
	if p.opts.Variant != "" {
		s += "/" + p.opts.Variant
	}
	return s
}

// platforms lists the platforms of an index's entries, for messages.
func platforms(list manifest.List) string {
	var out []string
	for _, d := range list.Instances() {
		u, err := list.Instance(d)
		if err != nil || u.ReadOnly.Platform == nil {
			out = append(out, "(no platform)")
			continue
		}
		out = append(out, platformString(u.ReadOnly.Platform))
	}
	if len(out) == 0 {
		return "no entries"
	}
	return strings.Join(out, ", ")
}

func platformString(pl *imgspecv1.Platform) string {
	s := pl.OS + "/" + pl.Architecture
	if pl.Variant != "" {
		s += "/" + pl.Variant
	}
	return s
}

// blobInfo is what GetBlob needs to fetch layer l. Foreign URLs are
// dropped: blobs come from the registry only (see the package doc).
func blobInfo(l manifest.LayerInfo) types.BlobInfo {
	return types.BlobInfo{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType}
}
