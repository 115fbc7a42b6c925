package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Reference is an image name split into its parts: "vms/debian:12" has
// Repo "vms/debian" and Tag "12"; "cirros@sha256:ab.." has Repo "cirros" and
// Digest "sha256:ab..".
type Reference struct {
	Repo   string
	Tag    string
	Digest string
}

// ParseReference splits name. A name without tag or digest gets the tag
// "latest", as container image names do. The tag is the part after the last
// ':' that follows the last '/', so "host:5000/img" has no tag.
func ParseReference(name string) (Reference, error) {
	if name == "" {
		return Reference{}, fmt.Errorf("empty image name: %w", errdefs.ErrInvalidArgument)
	}
	if strings.ContainsAny(name, " \t\n") {
		return Reference{}, fmt.Errorf("image name %q contains whitespace: %w", name, errdefs.ErrInvalidArgument)
	}
	var r Reference
	rest := name
	if i := strings.Index(rest, "@"); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if !digestRE.MatchString(r.Digest) {
			return Reference{}, fmt.Errorf("image name %q: digest %q is not of the form sha256:<64 lower-case hex digits>: %w", name, r.Digest, errdefs.ErrInvalidArgument)
		}
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if r.Tag == "" {
			return Reference{}, fmt.Errorf("image name %q has an empty tag: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if rest == "" {
		return Reference{}, fmt.Errorf("image name %q has no repository part: %w", name, errdefs.ErrInvalidArgument)
	}
	r.Repo = rest
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// TagName is repo:tag, or "" when the reference has no tag.
func (r Reference) TagName() string {
	if r.Tag == "" {
		return ""
	}
	return r.Repo + ":" + r.Tag
}

// DigestName returns repo@digest.
func (r Reference) DigestName(digest string) string { return r.Repo + "@" + digest }
