package image

import (
	"context"
	"fmt"

	"github.com/vmpod/vmpod/pkg/image/oci"
)

// Pull fetches the image name refers to and returns its record. Names an
// image translation rule matches are fetched over HTTP(S); any other name
// is an OCI reference pulled from its registry with auth (may be nil). A
// pull of name@sha256:<hex> whose digest is already stored downloads
// nothing; concurrent pulls of one URL (or one pinned digest) share one
// download.
func (s *Store) Pull(ctx context.Context, name string, auth *oci.Auth) (Image, error) {
	r, err := ParseReference(name)
	if err != nil {
		return Image{}, err
	}
	if r.Digest != "" {
		s.mu.Lock()
		_, have := s.images[r.Digest]
		if have {
			img, err := s.recordLocked(r.Digest, r, nil, nil)
			s.mu.Unlock()
			return img, err
		}
		s.mu.Unlock()
	}
	m, err := s.opts.Translator.Translate(name)
	if err != nil {
		return Image{}, fmt.Errorf("translate image name %q: %w", name, err)
	}
	if !m.Matched {
		return s.pullOCI(ctx, name, r, auth, m.NoMatch)
	}
	return s.pullHTTP(ctx, name, r, m.Source)
}
