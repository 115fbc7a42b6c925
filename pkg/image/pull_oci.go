package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/logging"
)

// pullOCI pulls a containerDisk from an OCI registry. The image ID is the
// image's config digest (as containerd reports it); the disk file is stored
// once under its own digest however many images share it. r is the name as
// asked (its tag is recorded too, so a short name finds the image again);
// noRule is the translator's message that no rule matches the name.
func (s *Store) pullOCI(ctx context.Context, name string, r Reference, auth *oci.Auth, noRule string) (Image, error) {
	id, err := oci.Resolve(ctx, name, auth, s.opts.OCI)
	if err != nil {
		// Say both: the user may have meant either kind of name.
		return Image{}, fmt.Errorf("%s, so it was taken as an OCI reference: %w", noRule, err)
	}
	tags, digests := ociNames(id, r)
	s.mu.Lock()
	if _, have := s.images[id.ConfigDigest]; have {
		img, err := s.recordNamesLocked(id.ConfigDigest, tags, digests, nil, nil)
		s.mu.Unlock()
		logging.From(ctx).Info("image already present, nothing downloaded", "image", name, "id", id.ConfigDigest)
		return img, err
	}
	s.mu.Unlock()

	img, _, err := s.flights.do(ctx, "oci:"+id.ConfigDigest, func(ctx context.Context) (Image, error) {
		return s.fetchOCI(ctx, name, auth, tags, digests)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull image %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recordNamesLocked(img.ID, tags, digests, nil, nil)
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

func (s *Store) fetchOCI(ctx context.Context, name string, auth *oci.Auth, tags, digests []string) (Image, error) {
	res, err := oci.Pull(ctx, name, auth, s.opts.OCI)
	if err != nil {
		return Image{}, err
	}
	defer os.Remove(res.TmpFile) // no-op after the rename
	info, err := s.opts.Checker.Check(ctx, res.TmpFile)
	if err != nil {
		return Image{}, fmt.Errorf("refused %s in %s: %w", res.DiskPath, res.Name, err)
	}
	if err := os.Chmod(res.TmpFile, 0o444); err != nil {
		return Image{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	final := s.filePath(res.DiskDigest)
	if _, err := os.Stat(final); err != nil {
		if err := os.Rename(res.TmpFile, final); err != nil {
			return Image{}, fmt.Errorf("store image file: %w", err)
		}
		if err := syncDir(filepath.Dir(final)); err != nil {
			return Image{}, err
		}
	}
	img, err := s.recordNamesLocked(res.ConfigDigest, tags, digests, &Origin{URL: "docker://" + res.Name}, &Image{
		ID: res.ConfigDigest, DiskDigest: res.DiskDigest, Size: res.Size,
		Format: info.Format, VirtualSize: info.VirtualSize, Pulled: time.Now().UTC(),
	})
	if err != nil {
		return Image{}, err
	}
	logging.From(ctx).Info("image stored", "image", name, "id", img.ID, "disk", res.DiskPath, "disk_digest", res.DiskDigest, "format", info.Format)
	return img, nil
}
