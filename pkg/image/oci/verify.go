package oci

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// errCorrupt marks a blob whose bytes do not match the manifest.
var errCorrupt = errors.New("blob does not match the manifest")

// errTooLarge marks a blob longer than the pull may read.
var errTooLarge = errors.New("blob too large")

// verifyingReader passes a blob through while checking its digest and
// size: at EOF it returns an error wrapping errCorrupt (and
// errdefs.ErrUnavailable) instead of io.EOF if the bytes do not match.
// containers/image's GetBlob does not verify. Reads may come from a
// decompressor's goroutine, so the state is guarded.
type verifyingReader struct {
	r        io.Reader
	want     digest.Digest
	size     int64 // from the manifest; <= 0: unknown
	max      int64 // the most bytes read at all (max_image_size)
	verifier digest.Verifier
	counter  *atomic.Int64 // bytes downloaded by the whole pull

	mu       sync.Mutex
	n        int64
	err      error // the first error of r, or the verification's
	verified bool
}

func newVerifyingReader(r io.Reader, want digest.Digest, size, max int64, counter *atomic.Int64) *verifyingReader {
	return &verifyingReader{r: r, want: want, size: size, max: max, verifier: want.Verifier(), counter: counter}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	if v.verified {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.verifier.Write(p[:n])
		v.n += int64(n)
		v.counter.Add(int64(n))
		if v.size > 0 && v.n > v.size {
			v.err = fmt.Errorf("blob %s is longer than the %d bytes the manifest says: %w: %w", v.want, v.size, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
		if v.max > 0 && v.n > v.max {
			v.err = fmt.Errorf("blob %s is longer than %d bytes (max_image_size); nothing was stored: %w: %w", v.want, v.max, errTooLarge, errdefs.ErrResourceExhausted)
			return n, v.err
		}
	}
	switch {
	case err == io.EOF:
		if v.size > 0 && v.n != v.size {
			v.err = fmt.Errorf("blob %s ended after %d of the %d bytes the manifest says: %w: %w", v.want, v.n, v.size, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
		if !v.verifier.Verified() {
			v.err = fmt.Errorf("the content of blob %s does not match its digest: the registry served corrupt data; nothing was stored: %w: %w",
				v.want, errCorrupt, errdefs.ErrUnavailable)
			return n, v.err
		}
		v.verified = true
	case err != nil:
		v.err = err
	}
	return n, err
}

// state returns the reader's error and whether the whole blob was read
// and matched.
func (v *verifyingReader) state() (error, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err, v.verified
}
