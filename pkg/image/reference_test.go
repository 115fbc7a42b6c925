package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseReference(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in                string
		repo, tag, digest string
		bad               bool
	}{
		{in: "cirros", repo: "cirros", tag: "latest"},
		{in: "vms/debian:12", repo: "vms/debian", tag: "12"},
		{in: "host:5000/img", repo: "host:5000/img", tag: "latest"},
		{in: "host:5000/img:v2", repo: "host:5000/img", tag: "v2"},
		{in: "img@" + d, repo: "img", digest: d},
		{in: "img:1@" + d, repo: "img", tag: "1", digest: d},
		{in: "", bad: true},
		{in: "img@sha256:short", bad: true},
		{in: "img:", bad: true},
		{in: "has space", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseReference(tc.in)
			if tc.bad {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || r.Repo != tc.repo || r.Tag != tc.tag || r.Digest != tc.digest {
				t.Fatalf("got %+v, %v", r, err)
			}
		})
	}
}
