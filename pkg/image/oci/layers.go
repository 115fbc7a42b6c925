package oci

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// diskDir is the directory a containerDisk keeps its disk in, and
// checkpointDir the one a checkpoint image keeps its archive in, without
// the leading slash (tar entry names are relative). An image holds one
// regular file in one of them: its payload.
const (
	diskDir       = "disk/"
	checkpointDir = "checkpoint/"
)

// payloadDir is the payload directory p is in ("disk/" or
// "checkpoint/"), or "".
func payloadDir(p string) string {
	for _, d := range []string{diskDir, checkpointDir} {
		if strings.HasPrefix(p, d) {
			return d
		}
	}
	return ""
}

// isPayloadDir reports whether p is a payload directory itself.
func isPayloadDir(p string) bool {
	return p+"/" == diskDir || p+"/" == checkpointDir
}

// overlay is what the layers above the one being read hide in it.
type overlay struct {
	removed map[string]bool // whiteouts: the path and all below it
	opaque  map[string]bool // directories whose lower contents are hidden
	present map[string]bool // paths an upper layer has (of any type)
	nonDir  map[string]bool // paths an upper layer has as a non-directory
}

func newOverlay() *overlay {
	return &overlay{removed: map[string]bool{}, opaque: map[string]bool{}, present: map[string]bool{}, nonDir: map[string]bool{}}
}

// hidden reports whether p of a lower layer is hidden by the layers above:
// removed by a whiteout of p or of a parent, below an opaque directory,
// replaced by an upper entry of the same path, or below an upper
// non-directory.
func (o *overlay) hidden(p string) bool {
	if o.removed[p] || o.present[p] || o.opaque[""] {
		return true
	}
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if o.removed[dir] || o.opaque[dir] || o.nonDir[dir] {
			return true
		}
	}
	return false
}

// merge adds a layer's changes, once the layer is read, for the layers
// below it. A layer's whiteouts do not apply to itself.
func (o *overlay) merge(l *overlay) {
	for _, pair := range [][2]map[string]bool{{o.removed, l.removed}, {o.opaque, l.opaque}, {o.present, l.present}, {o.nonDir, l.nonDir}} {
		for k := range pair[1] {
			pair[0][k] = true
		}
	}
}

// findings collects what the layers hold, for the error when there is no
// disk: everything met under /disk/ or /checkpoint/ and a sample of the
// rest.
type findings struct {
	underDisk   []string
	others      []string
	otherCount  int
	maxListed   int
	diskDropped int
}

func (f *findings) disk(s string) {
	if len(f.underDisk) < f.maxListed {
		f.underDisk = append(f.underDisk, bounded(s))
	} else {
		f.diskDropped++
	}
}

func (f *findings) other(p string) {
	f.otherCount++
	if len(f.others) < f.maxListed {
		f.others = append(f.others, "/"+bounded(p))
	}
}

func (f *findings) noDiskError() error {
	var b strings.Builder
	b.WriteString("the image has no regular file under /disk/ or /checkpoint/")
	if len(f.underDisk) > 0 {
		fmt.Fprintf(&b, "; found there: %s", strings.Join(f.underDisk, ", "))
		if f.diskDropped > 0 {
			fmt.Fprintf(&b, " and %d more", f.diskDropped)
		}
	}
	if f.otherCount > 0 {
		fmt.Fprintf(&b, "; other files: %s", strings.Join(f.others, ", "))
		if f.otherCount > len(f.others) {
			fmt.Fprintf(&b, " (%d in all)", f.otherCount)
		}
	} else if len(f.underDisk) == 0 {
		b.WriteString("; the layers are empty")
	}
	b.WriteString("; a containerDisk holds exactly one disk image as /disk/<name>, a checkpoint image one vmpod checkpoint archive as /checkpoint/<name>")
	return fmt.Errorf("%s: %w", b.String(), errdefs.ErrInvalidArgument)
}

// diskSink receives the disk entry's bytes.
type diskSink interface {
	// take copies r (the entry's content, size bytes by its header) over
	// anything taken before.
	take(r io.Reader, size int64) error
}

// scanLayer reads one layer's tar stream. Entries hidden by the layers
// above (ov) are skipped. It returns the path (without the leading slash)
// of the visible regular file under /disk/ or /checkpoint/ that it gave
// to sink, or "" if the layer has none; then changes holds the layer's
// whiteouts and entries for the layers below. A second distinct file
// under either directory is an error.
func scanLayer(ctx context.Context, tr *tar.Reader, ov *overlay, sink diskSink, found *findings) (disk string, changes *overlay, err error) {
	changes = newOverlay()
	// isLink is set when the visible /disk/ entry is a hard link (to
	// linkTarget), which cannot be served: its content was in an earlier
	// entry.
	var isLink bool
	var linkTarget string
	several := func(a, b string) error {
		return fmt.Errorf("the image has several files under /disk/ and /checkpoint/ (/%s and /%s); a containerDisk or checkpoint image holds exactly one: %w",
			bounded(a), bounded(b), errdefs.ErrInvalidArgument)
	}
	for {
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("read tar entry: %w", err)
		}
		p, ok := cleanEntryName(h.Name)
		if !ok {
			continue
		}
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if strings.HasPrefix(base, ".wh.") {
			switch {
			case base == ".wh..wh..opq":
				changes.opaque[dir] = true
			case strings.HasPrefix(base, ".wh..wh."):
				// aufs bookkeeping (.wh..wh.plnk, ...): no meaning here.
			default:
				changes.removed[path.Join(dir, strings.TrimPrefix(base, ".wh."))] = true
			}
			continue
		}
		changes.present[p] = true
		if h.Typeflag != tar.TypeDir {
			changes.nonDir[p] = true
		}
		if disk != "" && (p == disk && !isFile(h) || strings.HasPrefix(disk, p+"/") && h.Typeflag != tar.TypeDir) {
			// A later entry replaces the disk, or a directory above it,
			// with something else, as unpacking the layer would.
			disk, isLink = "", false
		}
		if isPayloadDir(p) {
			if h.Typeflag != tar.TypeDir && !ov.hidden(p) {
				found.disk(fmt.Sprintf("/%s itself (%s)", p, kind(h)))
			}
			continue
		}
		if payloadDir(p) == "" {
			found.other(p)
			continue
		}
		if ov.hidden(p) {
			found.disk("/" + p + " (hidden by a later layer)")
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse, tar.TypeLink:
			if disk != "" && disk != p {
				return "", nil, several(disk, p)
			}
			// The same path twice in one layer: the later entry wins, as
			// when the layer is unpacked.
			disk = p
			isLink = h.Typeflag == tar.TypeLink
			if isLink {
				linkTarget, _ = cleanEntryName(h.Linkname)
				continue
			}
			if err := sink.take(tr, h.Size); err != nil {
				return "", nil, err
			}
		case tar.TypeDir:
			// Subdirectories are fine as long as one file is found.
		default:
			found.disk(fmt.Sprintf("/%s (%s)", p, kind(h)))
		}
	}
	if isLink {
		return "", nil, fmt.Errorf("the disk /%s is a hard link to /%s; vmpod needs it as a regular file, rebuild the image without hard links: %w",
			bounded(disk), bounded(linkTarget), errdefs.ErrInvalidArgument)
	}
	return disk, changes, nil
}

// maxListedName bounds each entry name an error shows: names come from the
// registry, and a PAX header lets one be up to 1 MiB long.
const maxListedName = 256

// bounded cuts s for a message, saying how long it was.
func bounded(s string) string {
	if len(s) <= maxListedName {
		return s
	}
	i := maxListedName
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:i], len(s))
}

// cleanEntryName turns a tar entry name ("./disk/x", "/disk/x", "disk/x")
// into "disk/x"; ok is false for the root.
func cleanEntryName(name string) (string, bool) {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	return p, p != ""
}

// isFile reports whether h is a regular file or a hard link.
func isFile(h *tar.Header) bool {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeLink:
		return true
	}
	return false
}

func kind(h *tar.Header) string {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		return "regular file"
	case tar.TypeLink:
		return "hard link to " + bounded(h.Linkname)
	case tar.TypeSymlink:
		return "symlink to " + bounded(h.Linkname)
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	default:
		return fmt.Sprintf("tar type %q", h.Typeflag)
	}
}
