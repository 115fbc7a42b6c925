package imagetranslation

import (
	"regexp"
	"strings"
)

// digestSuffix matches the digest an image name may carry, for example
// "cirros@sha256:<64 hex digits>". Only sha256 is recognised: it is the only
// algorithm the pullers verify, and a name with another suffix is left alone
// (so it matches no rule unless a rule spells it out).
var digestSuffix = regexp.MustCompile(`@(sha256:[0-9a-f]{64})$`)

// imageName is an image name split into the parts that rules match on.
type imageName struct {
	// full is the name without its digest, e.g. "cirros:0.6.2".
	full string
	// repo is full without its tag, e.g. "cirros"; equal to full when there is
	// no tag.
	repo string
	// tagged tells whether full carries a tag.
	tagged bool
	// digest is "sha256:<hex>" when the name carried one, else "".
	digest string
}

// parseName splits name into its matching parts. The tag is the part after the
// last ':' when that ':' comes after the last '/', so "host:5000/x" has no tag
// and "host:5000/x:1" has the tag "1".
func parseName(name string) imageName {
	n := imageName{full: name}
	if m := digestSuffix.FindStringSubmatchIndex(name); m != nil {
		n.full = name[:m[0]]
		n.digest = name[m[2]:m[3]]
	}
	n.repo = n.full
	if i := strings.LastIndexByte(n.full, ':'); i >= 0 && i > strings.LastIndexByte(n.full, '/') {
		n.repo = n.full[:i]
		n.tagged = true
	}
	return n
}
