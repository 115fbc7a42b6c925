package image

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/logging"
)

// pullOCI pulls a containerDisk from an OCI registry. The image ID is the
// image's config digest (as containerd reports it), verified by the pull;
// the disk file is stored once under its own digest however many images
// share it. r is the name as asked (its tag is recorded too, so a short
// name finds the image again); noRule is the translator's message that no
// rule matches the name.
//
// The registry is always asked for the manifest, with the caller's
// credentials (auth), so a name pinned by digest is no way around a pull
// secret. Layers are not downloaded again when the manifest names the
// config of a verified image that this same repository served before;
// any other pull downloads and verifies everything, and attaches to a
// stored image only when the disk it yields is that image's.
func (s *Store) pullOCI(ctx context.Context, name string, r Reference, auth *oci.Auth, noRule string) (Image, error) {
	opts := s.ociOptions()
	id, err := oci.Resolve(ctx, name, auth, opts)
	if err != nil {
		// Say both: the user may have meant either kind of name.
		return Image{}, fmt.Errorf("%s, so it was taken as an OCI reference: %w", noRule, err)
	}
	tags, digests := ociNames(id, r)
	repo := repoOf(id.RepoDigest)
	s.mu.Lock()
	if img, have := s.images[id.ConfigDigest]; have && img.Verified && img.hasRepo(repo) {
		if base := img.Checkpoint; base != nil {
			// This pull's credentials must reach the base image too.
			s.mu.Unlock()
			if err := s.pullBase(ctx, id.Name, *base, auth); err != nil {
				return Image{}, fmt.Errorf("pull image %q: %w", name, err)
			}
			s.mu.Lock()
		}
		rec, err := s.recordNamesLocked(id.ConfigDigest, tags, digests, nil, nil)
		s.mu.Unlock()
		logging.From(ctx).Info("image already present, nothing downloaded", "image", name, "id", id.ConfigDigest)
		return rec, err
	}
	s.mu.Unlock()

	// One download per manifest of one repository: a caller joining it has
	// been let see that manifest by the registry.
	// A checkpoint's base image is pulled in a flight of its own: the
	// checkpoint's flight waits for it, so it must never join a flight
	// that may wait for the checkpoint's (two archives naming each other
	// as their base would hold each other forever).
	key := "oci:" + repo + "@" + id.ManifestDigest
	if ctx.Value(basePullKey{}) != nil {
		key = "base:" + key
	}
	img, _, err := s.flights.do(ctx, key, func(ctx context.Context) (Image, error) {
		return s.fetchOCI(ctx, name, auth, opts, tags, digests)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull image %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recordNamesLocked(img.ID, tags, digests, nil, nil)
}

// repoOf is the repository of a repo@digest name.
func repoOf(repoDigest string) string {
	repo, _, _ := strings.Cut(repoDigest, "@")
	return repo
}

// ociOptions are the OCI puller's options with the store's limits.
func (s *Store) ociOptions() oci.Options {
	o := s.opts.OCI
	o.Limits = s.limits()
	return o
}

// ociNames are the repo tags and digests an OCI pull records.
func ociNames(id oci.Identity, r Reference) (tags, digests []string) {
	if id.RepoTag != "" {
		tags = append(tags, id.RepoTag)
		if asked := r.TagName(); asked != "" && asked != id.RepoTag && r.Digest == "" {
			tags = append(tags, asked)
		}
	}
	digests = append(digests, id.RepoDigest)
	if id.IndexDigest != "" {
		if repo, err := ParseReference(id.RepoDigest); err == nil {
			digests = append(digests, repo.Repo+"@"+id.IndexDigest)
		}
	}
	if r.Digest != "" {
		digests = append(digests, r.DigestName(r.Digest))
	}
	return tags, digests
}

func (s *Store) fetchOCI(ctx context.Context, name string, auth *oci.Auth, opts oci.Options, tags, digests []string) (Image, error) {
	res, err := oci.Pull(ctx, name, auth, opts)
	if err != nil {
		return Image{}, err
	}
	defer os.Remove(res.TmpFile) // no-op after the rename
	failpoint.Hit("pull/downloaded")
	var info DiskInfo
	var base *CheckpointBase
	if res.Kind == oci.KindCheckpoint {
		base, err = s.checkCheckpoint(ctx, res.Name, res.TmpFile, auth)
		info.Format = FormatCheckpoint
	} else {
		info, err = s.opts.Checker.Check(ctx, res.TmpFile)
	}
	if err != nil {
		return Image{}, fmt.Errorf("refused %s in %s: %w", res.DiskPath, res.Name, err)
	}
	failpoint.Hit("pull/checked")
	s.mu.Lock()
	defer s.mu.Unlock()
	if img, have := s.images[res.ConfigDigest]; have {
		if img.Verified && img.disk() == res.DiskDigest {
			logging.From(ctx).Info("image already present with the same disk", "image", name, "id", img.ID)
			return s.recordNamesLocked(img.ID, tags, digests, nil, nil)
		}
		// Not verified (stored by an older vmpod), or another disk under
		// the same verified config (which the diff_ids rule out): what was
		// just verified wins.
		if err := s.dropLocked(ctx, img, "a verified pull of this config gave another disk"); err != nil {
			return Image{}, err
		}
	}
	if err := s.placeLocked(res.TmpFile, res.DiskDigest); err != nil {
		return Image{}, err
	}
	img, err := s.recordNamesLocked(res.ConfigDigest, tags, digests, &Origin{URL: "docker://" + res.Name}, &Image{
		ID: res.ConfigDigest, Verified: true, DiskDigest: res.DiskDigest, Size: res.Size,
		Format: info.Format, VirtualSize: info.VirtualSize, Checkpoint: base, Pulled: time.Now().UTC(),
	})
	if err != nil {
		return Image{}, err
	}
	failpoint.Hit("pull/recorded")
	logging.From(ctx).Info("image stored", "image", name, "id", img.ID, "disk", res.DiskPath, "disk_digest", res.DiskDigest, "format", info.Format)
	return img, nil
}
