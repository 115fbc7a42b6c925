package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// checkPulled checks res against the pushed image and the disk's content,
// and that the temp file is the only file in the temp dir.
func checkPulled(t *testing.T, res Result, opts Options, img v1.Image, diskPath string, want []byte) {
	t.Helper()
	if res.DiskPath != diskPath {
		t.Errorf("DiskPath = %q, want %q", res.DiskPath, diskPath)
	}
	got, err := os.ReadFile(res.TmpFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("disk content differs: got %d bytes, want %d", len(got), len(want))
	}
	if res.Size != int64(len(want)) {
		t.Errorf("Size = %d, want %d", res.Size, len(want))
	}
	if d := sha256Digest(want); res.DiskDigest != d {
		t.Errorf("DiskDigest = %s, want %s", res.DiskDigest, d)
	}
	md, _ := img.Digest()
	cd, _ := img.ConfigName()
	if res.ManifestDigest != md.String() {
		t.Errorf("ManifestDigest = %s, want %s", res.ManifestDigest, md)
	}
	if res.ConfigDigest != cd.String() {
		t.Errorf("ConfigDigest = %s, want %s", res.ConfigDigest, cd)
	}
	if !strings.HasSuffix(res.RepoDigest, "@"+md.String()) {
		t.Errorf("RepoDigest = %s, want ...@%s", res.RepoDigest, md)
	}
	files, _ := os.ReadDir(opts.TmpDir)
	if len(files) != 1 {
		t.Errorf("temp dir holds %d files, want 1", len(files))
	}
}

// checkNoTempFiles fails if a failed pull left a file behind.
func checkNoTempFiles(t *testing.T, opts Options) {
	t.Helper()
	files, err := os.ReadDir(opts.TmpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Errorf("left behind in the temp dir: %s", f.Name())
	}
}

func TestPullSingleLayer(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 3<<20+17) // not a multiple of the copy buffer
	for _, tc := range []struct {
		name   string
		c      compressionKind
		docker bool
	}{
		{"oci gzip", gzipped, false},
		{"oci uncompressed", uncompressed, false},
		{"oci zstd", zstdCompressed, false},
		{"docker gzip", gzipped, true},
		{"docker uncompressed", uncompressed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := buildImage(t, tc.docker, "amd64", layer(t, tc.c, tc.docker,
				dirEntry("disk/"), fileEntry("disk/debian.qcow2", disk)))
			repo := "vms/" + strings.ReplaceAll(tc.name, " ", "-")
			ref := reg.push(img, repo+":12")
			opts := testOptions(t, "", reg.host)
			res, err := Pull(ctxTimeout(t), ref, nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, res, opts, img, "/disk/debian.qcow2", disk)
			if want := reg.host + "/" + repo + ":12"; res.Name != want || res.RepoTag != want {
				t.Errorf("Name, RepoTag = %q, %q, want %q", res.Name, res.RepoTag, want)
			}
			if res.IndexDigest != "" {
				t.Errorf("IndexDigest = %q for a plain image", res.IndexDigest)
			}
		})
	}
}

func TestPullMultiArch(t *testing.T) {
	reg := newTestRegistry(t)
	amd, _ := randomDisk(t, 4096)
	arm, _ := randomDisk(t, 8192)
	amdImg := buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/amd64.qcow2", amd)))
	armImg := buildImage(t, false, "arm64", layer(t, gzipped, false, fileEntry("disk/arm64.qcow2", arm)))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: armImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amdImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.pushIndex(idx, "vms/multi:1")
	idxDigest, _ := idx.Digest()

	opts := testOptions(t, "", reg.host)
	res, err := Pull(ctxTimeout(t), ref, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, res, opts, amdImg, "/disk/amd64.qcow2", amd)
	if res.IndexDigest != idxDigest.String() {
		t.Errorf("IndexDigest = %s, want %s", res.IndexDigest, idxDigest)
	}

	opts = testOptions(t, "", reg.host)
	opts.Arch = "arm64"
	res, err = Pull(ctxTimeout(t), ref, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, res, opts, armImg, "/disk/arm64.qcow2", arm)

	// Pull by the index's digest.
	opts = testOptions(t, "", reg.host)
	res, err = Pull(ctxTimeout(t), reg.host+"/vms/multi@"+idxDigest.String(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, res, opts, amdImg, "/disk/amd64.qcow2", amd)

	opts = testOptions(t, "", reg.host)
	opts.Arch = "s390x"
	_, err = Pull(ctxTimeout(t), ref, nil, opts)
	t.Log(err)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/s390x") || !strings.Contains(err.Error(), "linux/arm64/v8, linux/amd64") {
		t.Errorf("err = %v, want NotFound naming linux/s390x and the index's platforms", err)
	}
	checkNoTempFiles(t, opts)
}

func TestPullByDigest(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 5000)
	img := buildImage(t, true, "amd64", layer(t, gzipped, true, fileEntry("disk/d.img", disk)))
	reg.push(img, "vms/bydigest:1")
	md, _ := img.Digest()
	for _, ref := range []string{
		reg.host + "/vms/bydigest@" + md.String(),
		reg.host + "/vms/bydigest:1@" + md.String(), // the tag is dropped, as containerd does
	} {
		opts := testOptions(t, "", reg.host)
		res, err := Pull(ctxTimeout(t), ref, nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, res, opts, img, "/disk/d.img", disk)
		if res.RepoTag != "" || res.RepoDigest != reg.host+"/vms/bydigest@"+md.String() || res.Name != res.RepoDigest {
			t.Errorf("Name, RepoTag, RepoDigest = %q, %q, %q", res.Name, res.RepoTag, res.RepoDigest)
		}
	}

	// A digest the repository does not have.
	opts := testOptions(t, "", reg.host)
	_, err := Pull(ctxTimeout(t), reg.host+"/vms/bydigest@sha256:"+strings.Repeat("0", 64), nil, opts)
	t.Log(err)
	if !errdefs.IsNotFound(err) {
		t.Errorf("err = %v, want NotFound", err)
	}
}

func TestPullNotFound(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 100)
	reg.push(buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/d.img", disk))), "vms/there:1")
	for _, ref := range []string{reg.host + "/vms/there:2", reg.host + "/vms/missing:1", reg.host + "/vms/missing"} {
		opts := testOptions(t, "", reg.host)
		_, err := Pull(ctxTimeout(t), ref, nil, opts)
		t.Log(err)
		if !errdefs.IsNotFound(err) {
			t.Errorf("Pull(%s) = %v, want NotFound", ref, err)
		}
		if _, err := Resolve(ctxTimeout(t), ref, nil, opts); !errdefs.IsNotFound(err) {
			t.Errorf("Resolve(%s) = %v, want NotFound", ref, err)
		}
		checkNoTempFiles(t, opts)
	}
}

func TestPullCorruptBlob(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 300<<10)
	for _, c := range []compressionKind{uncompressed, gzipped} {
		l := layer(t, c, false, fileEntry("disk/d.qcow2", disk))
		img := buildImage(t, false, "amd64", l)
		ref := reg.push(img, fmt.Sprintf("vms/corrupt:%d", c))
		ld, _ := l.Digest()
		reg.mu.Lock()
		reg.corrupt = ld.String()
		reg.mu.Unlock()
		opts := testOptions(t, "", reg.host)
		_, err := Pull(ctxTimeout(t), ref, nil, opts)
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), ld.String()) {
			t.Errorf("err = %v, want an error naming blob %s", err, ld)
		}
		if c == uncompressed && (!errors.Is(err, errCorrupt) || !errdefs.IsUnavailable(err)) {
			// A flipped byte in a gzip stream may fail the decompressor
			// first; uncompressed it can only fail the digest.
			t.Errorf("err = %v, want a digest mismatch", err)
		}
		checkNoTempFiles(t, opts)
	}
}

func TestPullCancel(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 4<<20)
	l := layer(t, uncompressed, false, fileEntry("disk/d.qcow2", disk))
	ref := reg.push(buildImage(t, false, "amd64", l), "vms/cancel:1")
	ld, _ := l.Digest()
	reg.mu.Lock()
	reg.stall, reg.stalled = ld.String(), make(chan struct{})
	reg.mu.Unlock()

	opts := testOptions(t, "", reg.host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-reg.stalled
		// Let the first bytes reach the temp file.
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	_, err := Pull(ctx, ref, nil, opts)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	checkNoTempFiles(t, opts)
}

func TestResolve(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 1000)
	l := layer(t, gzipped, false, fileEntry("disk/d.qcow2", disk))
	img := buildImage(t, false, "amd64", l)
	ref := reg.push(img, "vms/resolve:1")
	opts := testOptions(t, "", reg.host)
	id, err := Resolve(ctxTimeout(t), ref, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := l.Digest()
	if n := reg.reads(ld.String()); n != 0 {
		t.Errorf("Resolve fetched the layer %d times", n)
	}
	res, err := Pull(ctxTimeout(t), ref, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	if id != res.Identity {
		t.Errorf("Resolve = %+v, Pull = %+v", id, res.Identity)
	}
}

// syncBuffer is a bytes.Buffer safe for the progress goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPullProgressAndSparse(t *testing.T) {
	reg := newTestRegistry(t)
	// A raw disk that is mostly zeros: data, 8 MiB of zeros, data, zeros.
	data, _ := randomDisk(t, 64<<10)
	disk := bytes.Join([][]byte{data, make([]byte, 8<<20), data, make([]byte, 1<<20)}, nil)
	ref := reg.push(buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/d.raw", disk))), "vms/progress:1")
	reg.mu.Lock()
	reg.throttle = 20 * time.Millisecond
	reg.mu.Unlock()

	var logs syncBuffer
	opts := testOptions(t, "", reg.host)
	opts.ProgressInterval = 5 * time.Millisecond
	opts.Log = slog.New(slog.NewTextHandler(&logs, nil))
	res, err := Pull(ctxTimeout(t), ref, &Auth{Username: "u", Password: "topsecret"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(res.TmpFile)
	if !bytes.Equal(got, disk) {
		t.Fatal("disk content differs")
	}
	if st, err := os.Stat(res.TmpFile); err == nil {
		if blocks := statBlocks(st); blocks*512 >= int64(len(disk)) {
			t.Errorf("the disk file uses %d bytes for %d bytes of mostly zeros; want holes", blocks*512, len(disk))
		}
	}
	out := logs.String()
	for _, s := range []string{"pull progress", "bytes_total=", "rate_mib_s=", "containerDisk pulled"} {
		if !strings.Contains(out, s) {
			t.Errorf("logs lack %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "topsecret") {
		t.Errorf("logs show the password:\n%s", out)
	}
}

func statBlocks(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks
	}
	return 1 << 62
}

func TestPullReportsDownloadedBytes(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 1<<20)
	l := layer(t, uncompressed, false, dirEntry("disk/"), fileEntry("disk/d.qcow2", disk))
	ref := reg.push(buildImage(t, false, "amd64", l), "vms/bytes:1")
	opts := testOptions(t, "", reg.host)
	var got int64
	opts.Downloaded = func(n int64) { got += n }
	if _, err := Pull(ctxTimeout(t), ref, nil, opts); err != nil {
		t.Fatal(err)
	}
	size, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	if got != size {
		t.Fatalf("reported %d downloaded bytes, want the layer's %d", got, size)
	}
}
