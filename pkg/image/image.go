package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// Image is the metadata record of one stored image.
type Image struct {
	// ID is "sha256:<hex>": the digest of the file for HTTP(S) images, the
	// config digest for OCI images.
	ID string `json:"id"`
	// Verified is set on OCI images whose config this vmpod fetched and
	// checked, with the diff_ids of the layers the disk came from: their ID
	// identifies the disk. Records of older versions lack it; they are
	// dropped at start-up (Open) and pulled again.
	Verified bool `json:"verified,omitempty"`
	// DiskDigest is "sha256:<hex>" of the disk file, which is stored once
	// under that name however many images share it. Empty means ID.
	DiskDigest string `json:"disk_digest,omitempty"`
	// RepoTags are the repo:tag names that point at this image.
	RepoTags []string `json:"repo_tags,omitempty"`
	// RepoDigests are repo@sha256:<hex> names of this image.
	RepoDigests []string `json:"repo_digests,omitempty"`
	// Size is the file size in bytes.
	Size int64 `json:"size"`
	// Format is "qcow2" or "raw", or FormatCheckpoint for a checkpoint
	// image (its file is a checkpoint archive).
	Format string `json:"format"`
	// Checkpoint is a checkpoint image's base image.
	Checkpoint *CheckpointBase `json:"checkpoint,omitempty"`
	// VirtualSize is the guest-visible disk size in bytes.
	VirtualSize int64 `json:"virtual_size"`
	// Origins records where the file was fetched from, for conditional
	// re-pulls and for ImageStatus's verbose info.
	Origins []Origin `json:"origins,omitempty"`
	// Pulled is when the image was first stored.
	Pulled time.Time `json:"pulled"`
}

// Origin is one URL an image was fetched from, with its user info and
// query string redacted (imagetranslation.RedactURL): it is shown by
// `crictl inspecti`.
type Origin struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// Disk returns the digest of the image's disk file.
func (img Image) Disk() string { return img.disk() }

// disk returns the digest naming the image's file.
func (img *Image) disk() string {
	if img.DiskDigest != "" {
		return img.DiskDigest
	}
	return img.ID
}

// contentAddressed tells whether the image's ID is the digest of its own
// disk file (an HTTP(S) image): bytes with that digest are this image.
func (img *Image) contentAddressed() bool { return img.disk() == img.ID }

// hasRepo tells whether the repository repo ("registry/vms/debian") served
// this image's content: a pull from it recorded a repo digest. Such a
// repository may name the image again without its layers being fetched.
func (img *Image) hasRepo(repo string) bool {
	for _, d := range img.RepoDigests {
		if strings.HasPrefix(d, repo+"@") {
			return true
		}
	}
	return false
}

func cloneImage(img *Image) Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.Origins = slices.Clone(img.Origins)
	return c
}

// recordLocked adds the names of r to image id; see recordNamesLocked.
func (s *Store) recordLocked(id string, r Reference, origin *Origin, newImg *Image) (Image, error) {
	var tags []string
	if t := r.TagName(); t != "" {
		tags = append(tags, t)
	}
	return s.recordNamesLocked(id, tags, []string{r.DigestName(id)}, origin, newImg)
}

// recordNamesLocked adds repo tags and repo digests to image id (creating
// its record from newImg when absent), moves each tag away from any other
// image, and persists every changed record.
func (s *Store) recordNamesLocked(id string, tags, digests []string, origin *Origin, newImg *Image) (Image, error) {
	img, ok := s.images[id]
	if !ok {
		if newImg == nil {
			return Image{}, fmt.Errorf("image %s vanished during pull: %w", id, errdefs.ErrNotFound)
		}
		img = newImg
	}
	changed := map[string]*Image{id: img}
	for _, tag := range tags {
		for oid, other := range s.images {
			if oid != id && slices.Contains(other.RepoTags, tag) {
				other.RepoTags = slices.DeleteFunc(other.RepoTags, func(t string) bool { return t == tag })
				changed[oid] = other
			}
		}
		if !slices.Contains(img.RepoTags, tag) {
			img.RepoTags = append(img.RepoTags, tag)
			slices.Sort(img.RepoTags)
		}
	}
	for _, dn := range digests {
		if !slices.Contains(img.RepoDigests, dn) {
			img.RepoDigests = append(img.RepoDigests, dn)
			slices.Sort(img.RepoDigests)
		}
	}
	if origin != nil {
		img.Origins = slices.DeleteFunc(img.Origins, func(o Origin) bool { return o.URL == origin.URL })
		img.Origins = append(img.Origins, *origin)
	}
	for cid, c := range changed {
		if err := s.opts.Meta.Put(store.Images, cid, c); err != nil {
			return Image{}, fmt.Errorf("store image record %s: %w", cid, err)
		}
	}
	s.images[id] = img
	return cloneImage(img), nil
}

// dropLocked removes the record of img, whose ID a pull just found to
// stand for other bytes than its disk (a record an older vmpod stored
// from an unverified claim). Its file stays while a container uses it.
func (s *Store) dropLocked(ctx context.Context, img *Image, why string) error {
	logging.From(ctx).Warn("dropping an image record whose ID does not match its disk: "+why,
		"id", img.ID, "disk_digest", img.disk(), "names", img.RepoTags)
	if err := s.opts.Meta.Delete(store.Images, img.ID); err != nil {
		return fmt.Errorf("remove image record %s: %w", img.ID, err)
	}
	delete(s.images, img.ID)
	if !s.diskUsedLocked(img.disk()) {
		os.Remove(s.filePath(img.disk()))
	}
	return nil
}

// placeLocked moves the checked temporary file tmp, whose digest is d,
// to its place in the store, unless a file with that digest is there.
func (s *Store) placeLocked(tmp, d string) error {
	final := s.filePath(d)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("store image file: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	failpoint.Hit("pull/placed")
	return nil
}
