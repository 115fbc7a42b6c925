package image

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// Get returns the image a reference names: an ID ("sha256:<hex>", or the
// bare hex, or a unique hex prefix of at least 12 digits), a repo:tag (a
// name without tag means :latest) or a repo@digest. It returns an error
// wrapping errdefs.ErrNotFound if none matches.
func (s *Store) Get(ref string) (Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.lookupLocked(ref)
	if img == nil {
		return Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return cloneImage(img), nil
}

func (s *Store) lookupLocked(ref string) *Image {
	if img, ok := s.images[ref]; ok {
		return img
	}
	if img, ok := s.images["sha256:"+ref]; ok {
		return img
	}
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) >= 12 && isHex(hex) {
		var found *Image
		for id, img := range s.images {
			if strings.HasPrefix(id, "sha256:"+hex) {
				if found != nil {
					return nil // ambiguous
				}
				found = img
			}
		}
		if found != nil {
			return found
		}
	}
	r, err := ParseReference(ref)
	if err != nil {
		return nil
	}
	for _, img := range s.images {
		if r.Digest != "" {
			if slices.Contains(img.RepoDigests, r.DigestName(r.Digest)) {
				return img
			}
			continue
		}
		if slices.Contains(img.RepoTags, r.TagName()) {
			return img
		}
	}
	return nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// List returns all images sorted by ID.
func (s *Store) List() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, cloneImage(img))
	}
	slices.SortFunc(out, func(a, b Image) int { return strings.Compare(a.ID, b.ID) })
	return out
}
