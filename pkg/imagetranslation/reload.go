package imagetranslation

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// current returns the rules in effect, re-reading the directory when its
// fingerprint changed since it was last read.
func (t *Translator) current() *ruleSet {
	_, fp, _ := t.scan()
	if rs := t.rules.Load(); rs != nil && rs.fingerprint == fp {
		return rs
	}
	t.reload.Lock()
	defer t.reload.Unlock()
	// Scan again under the lock: another goroutine may have re-read the
	// directory while this one waited, and an older scan must not replace
	// the rules of a newer one.
	entries, fp, dirErr := t.scan()
	if rs := t.rules.Load(); rs != nil && rs.fingerprint == fp {
		return rs
	}
	// The fingerprint is taken before the files are read: a file that changes
	// in between changes the next fingerprint, so it is read again then.
	rs := t.load(entries, dirErr)
	rs.fingerprint = fp
	t.rules.Store(rs)
	return rs
}

// dirEntry is a rules file found in the directory.
type dirEntry struct {
	name string
	path string
}

// scan lists the rules files of the directory in file-name order and returns
// a fingerprint of their names, sizes and modification times. Files are
// stat'ed through symlinks, so an update of a Kubernetes ConfigMap volume
// (which swaps a symlink to the data directory) changes the fingerprint.
func (t *Translator) scan() ([]dirEntry, string, error) {
	des, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, "error\x00" + err.Error(), err
	}
	var (
		entries []dirEntry
		fp      strings.Builder
	)
	for _, de := range des { // os.ReadDir sorts by name
		if !isRulesFile(de.Name()) {
			continue
		}
		path := filepath.Join(t.dir, de.Name())
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			// Gone since ReadDir, or a dangling symlink: load reports it.
			fmt.Fprintf(&fp, "%s\x00stat error %v\n", de.Name(), err)
		case fi.IsDir():
			continue
		default:
			fmt.Fprintf(&fp, "%s\x00%d\x00%s\n", de.Name(), fi.Size(), strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		}
		entries = append(entries, dirEntry{name: de.Name(), path: path})
	}
	return entries, fp.String(), nil
}

// load reads the listed files and indexes their rules. dirErr is the error of
// reading the directory, if any.
func (t *Translator) load(entries []dirEntry, dirErr error) *ruleSet {
	rs := &ruleSet{exact: map[string]*Rule{}}
	switch {
	case errors.Is(dirErr, fs.ErrNotExist):
		rs.dirState = "the directory does not exist"
		t.log.Info("image translation directory does not exist; no image translation rules")
		return rs
	case dirErr != nil:
		err := withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("read image translation directory: %w", dirErr))
		rs.dirState = "the directory cannot be read"
		rs.problems = append(rs.problems, err)
		t.log.Error("cannot read image translation directory; no image translation rules", "err", err)
		return rs
	}
	nRules := 0
	for _, e := range entries {
		rules, err := LoadFile(e.path)
		if err != nil {
			rs.problems = append(rs.problems, err)
			t.log.Error("image translation file skipped", "file", e.path, "err", err)
			continue
		}
		rs.files = append(rs.files, e.path)
		nRules += len(rules)
		for i := range rules {
			r := &rules[i]
			if r.Regexp != nil {
				rs.regexps = append(rs.regexps, r)
				continue
			}
			if first, ok := rs.exact[r.Name]; ok {
				t.log.Warn("image translation rule never used: an earlier rule has the same name",
					"rule", r.String(), "name", r.Name, "earlier", first.String())
				continue
			}
			rs.exact[r.Name] = r
		}
	}
	t.log.Info("image translation rules loaded", "files", len(rs.files), "rules", nRules, "skipped_files", len(rs.problems))
	return rs
}
