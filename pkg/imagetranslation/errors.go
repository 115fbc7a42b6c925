package imagetranslation

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// ErrNoMatch is the class of the error Translate returns when no rule matches
// an image name. The error also satisfies errdefs.IsNotFound. Callers that
// fall back to another source (for example an OCI registry) test for it with
// errors.Is(err, ErrNoMatch).
var ErrNoMatch = errors.New("no image translation rule matches")

// classed attaches an error class (an errdefs sentinel or ErrNoMatch) to err
// without changing its message, so errors.Is finds both the class and every
// error wrapped in err.
type classed struct {
	err   error
	class error
}

func (e *classed) Error() string   { return e.err.Error() }
func (e *classed) Unwrap() []error { return []error{e.err, e.class} }

// withClass returns err classed as class; nil stays nil.
func withClass(class, err error) error {
	if err == nil {
		return nil
	}
	return &classed{err: err, class: class}
}

// invalidf formats an error classed as errdefs.ErrInvalidArgument. Use %w in
// format to wrap a cause.
func invalidf(format string, args ...any) error {
	return withClass(errdefs.ErrInvalidArgument, fmt.Errorf(format, args...))
}

// noMatchError is returned by Translate when no rule matches. Its message
// tells the user where to add a rule and, when some files could not be
// loaded, which ones and why: a rule in a broken file may be the one the user
// expected to match.
type noMatchError struct {
	name     string
	dir      string
	dirState string  // "" when the directory was read, else why it was not
	problems []error // files skipped because they failed to load
}

func (e *noMatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no image translation rule matches %q; add a [[translations]] rule to a .toml or .yaml file in %s", e.name, e.dir)
	if e.dirState != "" {
		fmt.Fprintf(&b, " (%s)", e.dirState)
	}
	if len(e.problems) > 0 {
		fmt.Fprintf(&b, "; note that %d file(s) there could not be loaded and are ignored until fixed: ", len(e.problems))
		for i, p := range e.problems {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(p.Error())
		}
	}
	return b.String()
}

func (e *noMatchError) Unwrap() []error {
	return []error{ErrNoMatch, errdefs.ErrNotFound}
}
