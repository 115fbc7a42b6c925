// Package imagetranslation owns the mapping from an image name, as a pod spec
// or crictl gives it, to the source its disk image is downloaded from: a URL
// and the HTTP transport settings to fetch it with.
//
// The mapping comes from rules files (TOML or YAML) in one directory, by
// default /etc/vmpod/images.d; docs/image-translation.md describes their
// format for users. A Translator re-reads the directory whenever its files
// change, so rules can be edited without restarting vmpod.
//
// Order of matching (first match wins):
//
//  1. name rules equal to the name (tag included, digest removed), files in
//     file-name order, rules in order of appearance;
//  2. when the name has a tag, name rules without a tag equal to the name
//     without its tag, in the same order;
//  3. regexp rules, files in file-name order, rules in order of appearance.
//
// Whether a rule matches is part of Translate's answer, not an error: a
// name no rule matches is not an HTTP(S) image, and the caller decides what
// else it may be (pkg/image takes it as an OCI reference). The answer then
// carries the message that says where to add a rule.
//
// The package holds the rules and the transport settings they name;
// downloading with them (TLS, proxy, timeouts) is the HTTP(S) puller's job
// (pkg/image/httppull).
package imagetranslation

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultDir is the directory of rules files when the configuration
// (image_translations_dir) names none.
const DefaultDir = "/etc/vmpod/images.d"

// Source is where an image is downloaded from.
type Source struct {
	// Name is the image name as asked, digest included.
	Name string
	// Digest is the "sha256:<hex>" suffix of Name, or "" when it has none.
	// Translation ignores it; the puller verifies the download against it.
	Digest string
	// URL is the http or https URL of the disk image.
	URL string
	// Transport says how to download URL.
	Transport Transport
	// RuleFile is the file of the rule that matched, for messages.
	RuleFile string
}

// Match is what the rules say about one image name.
type Match struct {
	// Matched tells whether a rule matches the name. When none does, the
	// name is no HTTP(S) image; a caller may take it as something else.
	Matched bool
	// Source is where the image is downloaded from; the zero Source unless
	// Matched.
	Source Source
	// NoMatch, when Matched is false, is the message for users: no rule
	// matches the name, where to add one and, when some files of the
	// directory could not be loaded, which ones and why (a rule in a broken
	// file may be the one the user expected to match).
	NoMatch string
}

// Translator translates image names with the rules files of one directory.
// It is safe for concurrent use.
type Translator struct {
	dir string
	log *slog.Logger

	reload sync.Mutex // held while re-reading the directory
	rules  atomic.Pointer[ruleSet]
}

// ruleSet is the immutable result of reading the directory once.
type ruleSet struct {
	fingerprint string
	// files are the paths of the files whose rules are in effect, in order.
	files []string
	// problems are the errors of the files that were skipped, in file order,
	// and of the directory itself when it could not be read.
	problems []error
	// dirState is why the directory gave no files ("" when it was read).
	dirState string
	// exact maps each name of a name rule to its first rule.
	exact map[string]*Rule
	// regexps are the regexp rules in matching order.
	regexps []*Rule
}

// New returns a Translator for the rules files in dir (DefaultDir when dir is
// ""), logging to log (slog.Default() when nil). It reads the directory at
// once, so problems with the files are logged at startup; a directory that
// does not exist means no rules, and is not an error.
func New(dir string, log *slog.Logger) *Translator {
	if dir == "" {
		dir = DefaultDir
	}
	if log == nil {
		log = slog.Default()
	}
	t := &Translator{dir: dir, log: log.With("dir", dir)}
	t.current()
	return t
}

// Translate returns what the rules say about the image name, re-reading the
// rules files first when they changed: Match.Matched and the source when a
// rule matches, otherwise Match.NoMatch. A "@sha256:<hex>" digest suffix of
// name is ignored for matching and returned in Source.Digest. No rule
// matching is not an error. Errors wrap errdefs.ErrInvalidArgument: an empty
// name, or a regexp rule that expands to an invalid URL for this name.
func (t *Translator) Translate(name string) (Match, error) {
	if name == "" {
		return Match{}, invalidf("translate image name: the name is empty")
	}
	rs := t.current()
	n := parseName(name)
	r, groups := rs.match(n)
	if r == nil {
		return Match{NoMatch: noMatchMessage(name, t.dir, rs.dirState, rs.problems)}, nil
	}
	src := Source{Name: name, Digest: n.digest, URL: r.URL, Transport: r.Transport, RuleFile: r.File}
	if r.Regexp != nil {
		src.URL = string(r.Regexp.ExpandString(nil, r.URL, n.full, groups))
		if err := checkURL(src.URL); err != nil {
			return Match{}, invalidf("translate image %q with %s: url %q expands to %q: %w", name, r, RedactURL(r.URL), RedactURL(src.URL), err)
		}
	}
	t.log.Debug("image name translated", "image", name, "url", src.RedactedURL(), "rule", r.String())
	return Match{Matched: true, Source: src}, nil
}

// Matches tells whether a rule matches the image name, re-reading the rules
// files first when they changed. It is true also when Translate would fail
// because a regexp rule expands to an invalid URL for this name: the name is
// still meant to be translated.
func (t *Translator) Matches(name string) bool {
	if name == "" {
		return false
	}
	r, _ := t.current().match(parseName(name))
	return r != nil
}

// Files returns the paths of the rules files in effect, in matching order,
// re-reading the directory first when it changed. Files that failed to load
// are not among them; Problems lists those.
func (t *Translator) Files() []string {
	return append([]string(nil), t.current().files...)
}

// Problems returns one error per rules file that failed to load and is
// skipped (each naming its file), or for the directory when it could not be
// read, re-reading the directory first when it changed. A directory that does
// not exist is not a problem.
func (t *Translator) Problems() []error {
	return append([]error(nil), t.current().problems...)
}

// match returns the rule that matches n and, for a regexp rule, the submatch
// indexes of n.full; nil when no rule matches.
func (rs *ruleSet) match(n imageName) (*Rule, []int) {
	if r, ok := rs.exact[n.full]; ok {
		return r, nil
	}
	if n.tagged {
		// A rule whose name has no tag matches every tag. The name of a
		// rule found under n.repo has no tag: parseName splits at a ':'
		// after the last '/', and n.repo has no such ':'.
		if r, ok := rs.exact[n.repo]; ok {
			return r, nil
		}
	}
	for _, r := range rs.regexps {
		if m := r.Regexp.FindStringSubmatchIndex(n.full); m != nil {
			return r, m
		}
	}
	return nil, nil
}
