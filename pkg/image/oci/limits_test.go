package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// TestPullBombs: a small gzip layer that inflates beyond max_image_size is
// refused, whether the inflated bytes are the disk (refused from its tar
// header, before a byte is written) or another file (refused once the
// stream passes the limit); nothing is left behind.
func TestPullBombs(t *testing.T) {
	reg := newTestRegistry(t)
	big := bytes.Repeat([]byte{1}, 8<<20) // compresses about 1000:1
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"disk", []entry{fileEntry("disk/bomb.raw", big)}, "the disk file is 8388608 bytes"},
		{"other file", []entry{fileEntry("junk/bomb", big), fileEntry("disk/d.raw", make([]byte, 4096))}, "layer 1 uncompressed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := layer(t, gzipped, false, tc.entries...)
			size, _ := l.Size()
			if size > 64<<10 {
				t.Fatalf("the bomb is %d bytes compressed", size)
			}
			ref := reg.push(buildImage(t, false, "amd64", l), "bombs/"+strings.ReplaceAll(tc.name, " ", "-")+":1")
			opts := testOptions(t, "", reg.host)
			opts.Limits = transfer.Limits{MaxImageSize: 1 << 20}
			_, err := Pull(ctxTimeout(t), ref, nil, opts)
			if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "max_image_size") {
				t.Fatalf("err = %v; want ResourceExhausted saying %q and naming max_image_size", err, tc.want)
			}
			checkNoTempFiles(t, opts)
		})
	}
}

// TestPullBlobLimits: a blob the manifest says is above max_image_size is
// not fetched at all.
func TestPullBlobLimits(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 2<<20)
	l := layer(t, uncompressed, false, fileEntry("disk/d.raw", disk))
	ref := reg.push(buildImage(t, false, "amd64", l), "big/one:1")
	opts := testOptions(t, "", reg.host)
	opts.Limits = transfer.Limits{MaxImageSize: 1 << 20}
	_, err := Pull(ctxTimeout(t), ref, nil, opts)
	ld, _ := l.Digest()
	if !errors.Is(err, errdefs.ErrResourceExhausted) || reg.reads(ld.String()) != 0 {
		t.Fatalf("err = %v after %d reads of the layer; want ResourceExhausted before any", err, reg.reads(ld.String()))
	}
	checkNoTempFiles(t, opts)
}

func TestPullFreeSpace(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 40<<20)
	ref := reg.push(buildImage(t, false, "amd64", layer(t, uncompressed, false, fileEntry("disk/d.raw", disk))), "space/d:1")
	full := fmt.Errorf("the image store's file system is full: %w", errdefs.ErrResourceExhausted)
	for _, tc := range []struct {
		name     string
		refuseAt int // the CheckSpace call that fails: 1 before, 2 during
	}{{"before", 1}, {"during", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []int64
			opts := testOptions(t, "", reg.host)
			opts.Limits.CheckSpace = func(need int64) error {
				asked = append(asked, need)
				if len(asked) == tc.refuseAt {
					return full
				}
				return nil
			}
			_, err := Pull(ctxTimeout(t), ref, nil, opts)
			if !errors.Is(err, full) || asked[0] != 40<<20 {
				t.Fatalf("err = %v after asking %v; want the space error, first for the disk's %d bytes", err, asked, 40<<20)
			}
			checkNoTempFiles(t, opts)
		})
	}
}

// TestPullDeadlines: a registry that never answers a manifest, or stops in
// the middle of a blob, fails the pull with Unavailable after
// pull_request_timeout or pull_stall_timeout (never DeadlineExceeded) and
// leaves no file.
func TestPullDeadlines(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 2<<20)
	l := layer(t, uncompressed, false, fileEntry("disk/d.raw", disk))
	ref := reg.push(buildImage(t, false, "amd64", l), "slow/d:1")
	ld, _ := l.Digest()
	for _, tc := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"silent manifest", func() { reg.silent = true }, "pull_request_timeout"},
		{"stalled blob", func() { reg.silent, reg.stall, reg.stalled = false, ld.String(), make(chan struct{}) }, "pull_stall_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.mu.Lock()
			tc.setup()
			reg.mu.Unlock()
			opts := testOptions(t, "", reg.host)
			opts.Limits = transfer.Limits{RequestTimeout: 2 * time.Second, StallTimeout: 4 * time.Second} // generous: a loaded machine must not look hung; the stall timeout beyond the request one
			start := time.Now()
			_, err := Pull(ctxTimeout(t), ref, nil, opts)
			if !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want Unavailable naming %s", err, tc.want)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("took %v", took)
			}
			checkNoTempFiles(t, opts)
		})
	}
}
