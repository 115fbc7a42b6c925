// Package checkpoint is the format of vmpod's checkpoint archives: a tar
// whose first member, checkpoint.json, names every other member with its
// size and sha256, and carries the metadata a restore needs. It knows
// nothing of VMs: pkg/lifecycle decides what goes in and what a restore
// accepts.
//
// A reader trusts nothing in an archive before it is verified: member
// names come from a fixed set, each member's size and digest must match
// the manifest, and every size is bounded before a byte is written.
package checkpoint

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/containerd/errdefs"
)

const (
	// Format and Version identify the archive format (checkpoint.json's
	// "format" and "version"); a reader refuses any other.
	Format  = "vmpod.dev/checkpoint"
	Version = 1
	// ManifestName is the archive's first member.
	ManifestName = "checkpoint.json"
	// maxManifest bounds checkpoint.json.
	maxManifest = 1 << 20
)

// Manifest is checkpoint.json.
type Manifest struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	// Members are the archive's other members, in archive order.
	Members []MemberInfo `json:"members"`
	// Meta is the writer's metadata (pkg/lifecycle's).
	Meta json.RawMessage `json:"meta"`
}

// MemberInfo is one member of the archive.
type MemberInfo struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Member is a file to put in an archive under Name.
type Member struct {
	Name, Path string
}

var memberName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Write writes an archive of members with meta at dst: to a temporary
// file beside it, mode 0600 (it holds a guest's memory), renamed into
// place once complete and synced. Members are hashed first, then copied.
func Write(dst string, meta any, members []Member) (retErr error) {
	m := Manifest{Format: Format, Version: Version, Created: time.Now().UTC()}
	raw, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	m.Meta = raw
	seen := map[string]bool{ManifestName: true}
	for _, mb := range members {
		if !memberName.MatchString(mb.Name) || seen[mb.Name] {
			return fmt.Errorf("checkpoint member name %q is invalid or repeated", mb.Name)
		}
		seen[mb.Name] = true
		size, sum, err := hashFile(mb.Path)
		if err != nil {
			return err
		}
		m.Members = append(m.Members, MemberInfo{Name: mb.Name, Size: size, SHA256: sum})
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create the checkpoint archive: %w", err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	tw := tar.NewWriter(f)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(manifest)))); err != nil {
		return err
	}
	if _, err := tw.Write(manifest); err != nil {
		return err
	}
	for i, mb := range members {
		if err := tw.WriteHeader(hdr(mb.Name, m.Members[i].Size)); err != nil {
			return err
		}
		src, err := os.Open(mb.Path)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, src)
		src.Close()
		if err != nil {
			return fmt.Errorf("copy %s into the checkpoint archive: %w", mb.Name, err)
		}
		if n != m.Members[i].Size {
			return fmt.Errorf("%s changed while the checkpoint was written", mb.Path)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hash %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Limits bound what Extract accepts.
type Limits struct {
	// Allowed are the member names a caller knows, each with its largest
	// size in bytes; any other name is refused.
	Allowed map[string]int64
	// Check, when set, sees the manifest before any member is written and
	// can refuse it (its metadata, its sizes).
	Check func(*Manifest) error
}

// Extract verifies the archive at src and writes its members into dir
// (which must exist; members are created 0600 and must not exist yet). It
// returns the manifest. Any mismatch fails with errdefs.ErrInvalidArgument
// and a message naming it; members written before the failure are
// removed.
func Extract(src, dir string, lim Limits) (*Manifest, error) {
	return read(src, dir, lim)
}

// Verify checks the archive at src as Extract does (the manifest, then
// every member's type, size and sha256) without writing anything.
func Verify(src string, lim Limits) (*Manifest, error) {
	return read(src, "", lim)
}

// read verifies the archive at src and, when dir is not "", writes its
// members into dir.
func read(src, dir string, lim Limits) (_ *Manifest, retErr error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("open the checkpoint archive: %w", err)
	}
	defer f.Close()
	var written []string
	defer func() {
		if retErr != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil {
		return nil, invalid("%s is not a checkpoint archive: %v", src, err)
	}
	if h.Name != ManifestName || h.Typeflag != tar.TypeReg || h.Size > maxManifest {
		return nil, invalid("%s is not a vmpod checkpoint archive: its first member is %q (%d bytes), not %s", src, h.Name, h.Size, ManifestName)
	}
	raw, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return nil, invalid("read %s: %v", ManifestName, err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("%s: %v", ManifestName, err)
	}
	if m.Format != Format || m.Version != Version {
		return nil, invalid("checkpoint format %q version %d; this vmpod reads %q version %d", m.Format, m.Version, Format, Version)
	}
	want := map[string]MemberInfo{}
	for _, mi := range m.Members {
		max, ok := lim.Allowed[mi.Name]
		switch {
		case !ok || !memberName.MatchString(mi.Name):
			return nil, invalid("checkpoint member %q is not one vmpod writes", mi.Name)
		case want[mi.Name] != (MemberInfo{}):
			return nil, invalid("checkpoint member %q is listed twice", mi.Name)
		case mi.Size < 0 || mi.Size > max:
			return nil, invalid("checkpoint member %s is %d bytes; at most %d", mi.Name, mi.Size, max)
		case len(mi.SHA256) != 64:
			return nil, invalid("checkpoint member %s has no sha256", mi.Name)
		}
		want[mi.Name] = mi
	}
	if lim.Check != nil {
		if err := lim.Check(&m); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("read the checkpoint archive: %v", err)
		}
		mi, ok := want[h.Name]
		if !ok || seen[h.Name] {
			return nil, invalid("checkpoint member %q is not in %s or comes twice", h.Name, ManifestName)
		}
		if h.Typeflag != tar.TypeReg || h.Size != mi.Size {
			return nil, invalid("checkpoint member %s: type %q, %d bytes; the manifest says a file of %d", h.Name, h.Typeflag, h.Size, mi.Size)
		}
		seen[h.Name] = true
		var out io.WriteCloser = nopCloser{io.Discard}
		if dir != "" {
			p := filepath.Join(dir, h.Name)
			if out, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return nil, fmt.Errorf("extract %s: %w", h.Name, err)
			}
			written = append(written, p)
		}
		sum := sha256.New()
		n, err := io.Copy(io.MultiWriter(out, sum), io.LimitReader(tr, mi.Size))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("extract %s: %w", h.Name, err)
		}
		if n != mi.Size {
			return nil, invalid("checkpoint member %s is truncated (%d of %d bytes)", h.Name, n, mi.Size)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != mi.SHA256 {
			return nil, invalid("checkpoint member %s has sha256 %s; the manifest says %s", h.Name, got, mi.SHA256)
		}
	}
	for name := range want {
		if !seen[name] {
			return nil, invalid("checkpoint member %s is missing", name)
		}
	}
	return &m, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func invalid(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}
