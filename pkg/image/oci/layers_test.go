package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestPullLayers(t *testing.T) {
	reg := newTestRegistry(t)
	a, _ := randomDisk(t, 100<<10)
	b, _ := randomDisk(t, 200<<10)
	tests := []struct {
		name     string
		layers   [][]entry // bottom first
		wantPath string
		want     []byte
		wantErr  []string // substrings of an ErrInvalidArgument
	}{{
		name:     "later layer replaces the disk",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("disk/.wh.a.qcow2", nil), fileEntry("disk/b.qcow2", b)}},
		wantPath: "/disk/b.qcow2", want: b,
	}, {
		name:     "later layer rewrites the same path",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("disk/a.qcow2", b)}},
		wantPath: "/disk/a.qcow2", want: b,
	}, {
		name:     "upper layers without disk",
		layers:   [][]entry{{dirEntry("disk/"), fileEntry("disk/a.qcow2", a)}, {fileEntry("etc/motd", []byte("hi"))}, {dirEntry("disk/")}},
		wantPath: "/disk/a.qcow2", want: a,
	}, {
		name:     "whiteout removes the upper disk, the lower one shows",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("disk/b.qcow2", b)}, {fileEntry("disk/.wh.b.qcow2", nil)}},
		wantPath: "/disk/a.qcow2", want: a,
	}, {
		name:    "whiteout removes the only disk",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("disk/.wh.a.qcow2", nil), fileEntry("etc/hostname", []byte("x"))}},
		wantErr: []string{"no regular file under /disk/", "/disk/a.qcow2 (hidden by a later layer)", "/etc/hostname"},
	}, {
		name:    "whiteout of the directory",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry(".wh.disk", nil)}},
		wantErr: []string{"no regular file under /disk/", "/disk/a.qcow2 (hidden by a later layer)"},
	}, {
		name:    "opaque directory hides the lower disk",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a)}, {dirEntry("disk/"), fileEntry("disk/.wh..wh..opq", nil)}},
		wantErr: []string{"no regular file under /disk/", "/disk/a.qcow2 (hidden by a later layer)"},
	}, {
		name:     "opaque directory with a new disk",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {dirEntry("disk/"), fileEntry("disk/.wh..wh..opq", nil), fileEntry("disk/b.qcow2", b)}},
		wantPath: "/disk/b.qcow2", want: b,
	}, {
		name:     "opaque directory elsewhere does not matter",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("etc/.wh..wh..opq", nil)}},
		wantPath: "/disk/a.qcow2", want: a,
	}, {
		name:    "disk replaced by a symlink",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a)}, {{name: "disk", typeflag: tar.TypeSymlink, linkname: "/srv"}}},
		wantErr: []string{"/disk/a.qcow2 (hidden by a later layer)", "/disk itself (symlink to /srv)"},
	}, {
		name:    "two disks in one layer",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a), fileEntry("disk/b.img", b)}},
		wantErr: []string{"several files under /disk/", "/disk/a.qcow2", "/disk/b.img"},
	}, {
		name:    "no disk",
		layers:  [][]entry{{fileEntry("etc/os-release", []byte("x")), fileEntry("boot/vmlinuz", []byte("y"))}},
		wantErr: []string{"no regular file under /disk/", "/etc/os-release", "/boot/vmlinuz"},
	}, {
		name:    "symlink is not a disk",
		layers:  [][]entry{{fileEntry("srv/a.qcow2", a), {name: "disk/a.qcow2", typeflag: tar.TypeSymlink, linkname: "/srv/a.qcow2"}}},
		wantErr: []string{"/disk/a.qcow2 (symlink to /srv/a.qcow2)"},
	}, {
		name:    "hard link is refused",
		layers:  [][]entry{{fileEntry("srv/a.qcow2", a), {name: "disk/a.qcow2", typeflag: tar.TypeLink, linkname: "srv/a.qcow2"}}},
		wantErr: []string{"/disk/a.qcow2 is a hard link to /srv/a.qcow2"},
	}, {
		name:     "nested path and ./ prefix",
		layers:   [][]entry{{dirEntry("./disk/"), fileEntry("./disk/a.qcow2", a)}},
		wantPath: "/disk/a.qcow2", want: a,
	}, {
		name:     "a checkpoint image",
		layers:   [][]entry{{dirEntry("checkpoint/"), fileEntry("checkpoint/web.tar", a)}},
		wantPath: "/checkpoint/web.tar", want: a,
	}, {
		name:     "a checkpoint above a disk layer",
		layers:   [][]entry{{fileEntry("disk/a.qcow2", a)}, {fileEntry("checkpoint/web.tar", b)}},
		wantPath: "/checkpoint/web.tar", want: b,
	}, {
		name:    "a disk and a checkpoint in one layer",
		layers:  [][]entry{{fileEntry("disk/a.qcow2", a), fileEntry("checkpoint/web.tar", b)}},
		wantErr: []string{"several files under /disk/ and /checkpoint/", "/disk/a.qcow2", "/checkpoint/web.tar"},
	}, {
		name:    "a checkpoint that is a symlink",
		layers:  [][]entry{{fileEntry("srv/web.tar", a), {name: "checkpoint/web.tar", typeflag: tar.TypeSymlink, linkname: "/srv/web.tar"}}},
		wantErr: []string{"no regular file under /disk/ or /checkpoint/", "/checkpoint/web.tar (symlink to /srv/web.tar)"},
	}}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers []v1.Layer
			for j, es := range tc.layers {
				c := gzipped
				if j%2 == 1 {
					c = uncompressed
				}
				layers = append(layers, layer(t, c, false, es...))
			}
			img := buildImage(t, false, "amd64", layers...)
			ref := reg.push(img, fmt.Sprintf("vms/layers%d:1", i))
			opts := testOptions(t, "", reg.host)
			res, err := Pull(ctxTimeout(t), ref, nil, opts)
			if tc.wantErr != nil {
				t.Log(err)
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				checkNoTempFiles(t, opts)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, res, opts, img, tc.wantPath, tc.want)
			if want := map[bool]Kind{false: KindDisk, true: KindCheckpoint}[strings.HasPrefix(tc.wantPath, "/checkpoint/")]; res.Kind != want {
				t.Errorf("Kind = %q, want %q", res.Kind, want)
			}
		})
	}
}

func TestPullStopsAtTheDiskLayer(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 1000)
	lower := layer(t, gzipped, false, fileEntry("usr/share/big", bytes.Repeat([]byte("x"), 1<<20)))
	top := layer(t, gzipped, false, fileEntry("disk/x.raw", disk))
	img := buildImage(t, false, "amd64", lower, top)
	ref := reg.push(img, "vms/stop:1")
	opts := testOptions(t, "", reg.host)
	res, err := Pull(ctxTimeout(t), ref, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, res, opts, img, "/disk/x.raw", disk)
	ld, _ := lower.Digest()
	td, _ := top.Digest()
	if n := reg.reads(ld.String()); n != 0 {
		t.Errorf("the lower layer was fetched %d times, want 0", n)
	}
	if n := reg.reads(td.String()); n != 1 {
		t.Errorf("the disk layer was fetched %d times, want 1", n)
	}
}
