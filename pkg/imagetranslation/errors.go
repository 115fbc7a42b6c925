package imagetranslation

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// classed attaches an error class (an errdefs sentinel) to err without
// changing its message, so errors.Is finds both the class and every error
// wrapped in err.
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

// noMatchMessage says that no rule matches the image name, where to add
// one and, when some files could not be loaded, which ones and why: a rule in
// a broken file may be the one the user expected. dirState is why the
// directory gave no files ("" when it was read); problems are the files
// skipped.
func noMatchMessage(name, dir, dirState string, problems []error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "no image translation rule matches %q; add a [[translations]] rule to a .toml or .yaml file in %s", name, dir)
	if dirState != "" {
		fmt.Fprintf(&b, " (%s)", dirState)
	}
	if len(problems) > 0 {
		fmt.Fprintf(&b, "; note that %d file(s) there could not be loaded and are ignored until fixed: ", len(problems))
		for i, p := range problems {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(p.Error())
		}
	}
	return b.String()
}

// multiError is a list of problems reported on one line.
type multiError []error

func (m multiError) Error() string {
	msgs := make([]string, len(m))
	for i, err := range m {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (m multiError) Unwrap() []error { return m }
