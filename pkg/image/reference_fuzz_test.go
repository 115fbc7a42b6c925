package image

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzParseReference splits a tenant's image name and checks: a refused
// name is InvalidArgument; an accepted one has a repository, a digest of
// the sha256:<64 hex> form or none, a tag without ':' or '/' when there
// is no digest (defaulting to latest), and joins back into the name.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"vms/debian:12", "cirros@sha256:" + strings.Repeat("ab", 32), "host:5000/img", "host:5000/img:1@sha256:" + strings.Repeat("0", 64),
		"x:", "@sha256:00", "a b", ":tag", "a@b@c", "UPPER:Case"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		r, err := ParseReference(name)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ParseReference(%q): %v is not InvalidArgument", name, err)
			}
			return
		}
		if r.Repo == "" || strings.ContainsAny(name, " \t\n") {
			t.Fatalf("ParseReference(%q) = %+v", name, r)
		}
		if r.Digest != "" && !digestRE.MatchString(r.Digest) {
			t.Fatalf("ParseReference(%q): digest %q", name, r.Digest)
		}
		if strings.ContainsAny(r.Tag, ":/") || r.Digest == "" && r.Tag == "" {
			t.Fatalf("ParseReference(%q): tag %q", name, r.Tag)
		}
		joined := r.Repo
		if r.Tag != "" {
			joined += ":" + r.Tag
		}
		if r.Digest != "" {
			joined += "@" + r.Digest
		}
		if joined != name && joined != name+":latest" {
			t.Fatalf("ParseReference(%q) = %+v joins into %q", name, r, joined)
		}
	})
}
