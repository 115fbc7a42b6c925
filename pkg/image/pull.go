package image

import (
	"context"
	"fmt"

	"github.com/vmpod/vmpod/pkg/image/oci"
)

// Pull fetches the image name refers to and returns its record. Names an
// image translation rule matches are fetched over HTTP(S); any other name
// is an OCI reference pulled from its registry with auth (may be nil).
//
// What is stored is named by verified content only (see the package doc):
// an HTTP(S) image by the digest of the bytes received, an OCI image by the
// digest of a config that was fetched and checked against the layers. A
// pinned HTTP(S) pull (name@sha256:<hex>) is answered from the store only
// for a name or URL that already served those bytes; an OCI pull always
// asks the registry for the manifest, with the caller's credentials, and
// downloads no layer when the image was stored from the same repository.
// Concurrent pulls of one URL (or one pinned digest, or one manifest of one
// repository) share one download.
func (s *Store) Pull(ctx context.Context, name string, auth *oci.Auth) (Image, error) {
	r, err := ParseReference(name)
	if err != nil {
		return Image{}, err
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
