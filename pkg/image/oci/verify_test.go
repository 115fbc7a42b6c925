package oci

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

func TestVerifyingReader(t *testing.T) {
	blob := bytes.Repeat([]byte("containerDisk "), 10000)
	d := digest.FromBytes(blob)
	flipped := bytes.Clone(blob)
	flipped[7] ^= 1
	for _, tc := range []struct {
		name    string
		served  []byte
		size    int64
		wantErr bool
	}{
		{"match", blob, int64(len(blob)), false},
		{"match, size unknown", blob, -1, false},
		{"flipped byte", flipped, int64(len(blob)), true},
		{"truncated", blob[:len(blob)-1], int64(len(blob)), true},
		{"truncated, size unknown", blob[:len(blob)-1], -1, true},
		{"too long", append(bytes.Clone(blob), 'x'), int64(len(blob)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			v := newVerifyingReader(bytes.NewReader(tc.served), d, tc.size, 0, &n)
			_, err := io.Copy(io.Discard, struct{ io.Reader }{v})
			vErr, ok := v.state()
			if tc.wantErr {
				if !errors.Is(err, errCorrupt) || !errdefs.IsUnavailable(err) || ok || vErr == nil {
					t.Errorf("err = %v, verified = %v; want a corrupt-blob error", err, ok)
				}
				return
			}
			if err != nil || !ok || vErr != nil {
				t.Errorf("err = %v, verified = %v", err, ok)
			}
			if n.Load() != int64(len(blob)) {
				t.Errorf("counted %d bytes, want %d", n.Load(), len(blob))
			}
		})
	}
}
