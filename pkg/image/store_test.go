package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/store"
)

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte("QFI\xfb")

// fakeChecker stands in for qemu-img: files starting with the qcow2 magic
// are qcow2, a "BACKING" marker means a backing file, everything else goes
// through the real raw checks.
type fakeChecker struct{}

func (fakeChecker) Check(ctx context.Context, path string) (DiskInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DiskInfo{}, err
	}
	info := DiskInfo{Format: "raw", VirtualSize: int64(len(b))}
	if bytes.HasPrefix(b, qcow2Magic) {
		info.Format = "qcow2"
		if bytes.Contains(b, []byte("BACKING")) {
			info.Backing = "/etc/passwd"
		}
	}
	return info, validate(info, path)
}

// mapTranslator translates names by a fixed map (tags ignored).
type mapTranslator map[string]string

func (m mapTranslator) Translate(name string) (imagetranslation.Match, error) {
	base := name
	if i := strings.Index(base, "@"); i >= 0 {
		base = base[:i]
	}
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		base = base[:i]
	}
	u, ok := m[base]
	if !ok {
		return imagetranslation.Match{NoMatch: fmt.Sprintf("no rule for %q", name)}, nil
	}
	return imagetranslation.Match{Matched: true, Source: imagetranslation.Source{Name: name, URL: u, RuleFile: "test.toml"}}, nil
}

// server serves files by path, counting GETs that sent a body; block, when
// set, holds each response until it is closed.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	gets   atomic.Int32
	block  chan struct{}
	status map[string]int
}

func newServer(t *testing.T) *server {
	s := &server{files: map[string][]byte{}, status: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, ok := s.files[r.URL.Path]
		code := s.status[r.URL.Path]
		block := s.block
		s.mu.Unlock()
		if code != 0 {
			w.WriteHeader(code)
			return
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		etag := fmt.Sprintf("%q", sha(body))
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		s.gets.Add(1)
		if block != nil {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) put(path string, body []byte) {
	s.mu.Lock()
	s.files[path] = body
	s.mu.Unlock()
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func qcow2(content string) []byte {
	b := append([]byte{}, qcow2Magic...)
	return append(b, []byte(content)...)
}

func newStore(t *testing.T, tr Translator) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	meta, err := store.Open(filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	s, err := Open(Options{
		Dir: filepath.Join(dir, "images"), Meta: meta, Translator: tr, Checker: fakeChecker{},
		ProgressInterval: 10 * time.Millisecond,
		// Hermetic: no registries.conf of the machine's.
		OCI: oci.Options{RegistriesConf: filepath.Join(dir, "registries.conf")},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func tmpEntries(t *testing.T, s *Store) []string {
	t.Helper()
	es, err := os.ReadDir(s.tmpDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPullStoresContentAddressed(t *testing.T) {
	srv := newServer(t)
	body := qcow2("disk one")
	srv.put("/a.qcow2", body)
	s, _ := newStore(t, mapTranslator{"vms/a": srv.URL + "/a.qcow2"})

	img, err := s.Pull(context.Background(), "vms/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != sha(body) || img.Size != int64(len(body)) || img.Format != "qcow2" {
		t.Fatalf("image = %+v", img)
	}
	if got := strings.Join(img.RepoTags, ","); got != "vms/a:latest" {
		t.Errorf("RepoTags = %q", got)
	}
	if got := strings.Join(img.RepoDigests, ","); got != "vms/a@"+img.ID {
		t.Errorf("RepoDigests = %q", got)
	}
	data, err := os.ReadFile(s.Path(img.ID))
	if err != nil || !bytes.Equal(data, body) {
		t.Fatalf("stored file = %q, %v", data, err)
	}
	for _, ref := range []string{"vms/a", "vms/a:latest", img.ID, strings.TrimPrefix(img.ID, "sha256:")[:12], "vms/a@" + img.ID} {
		if got, err := s.Get(ref); err != nil || got.ID != img.ID {
			t.Errorf("Get(%q) = %v, %v", ref, got.ID, err)
		}
	}
	if _, err := s.Get("vms/a:other"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get(other tag) = %v, want NotFound", err)
	}
	if len(tmpEntries(t, s)) != 0 {
		t.Errorf("temp files left: %v", tmpEntries(t, s))
	}
}

func TestPullByDigest(t *testing.T) {
	srv := newServer(t)
	body := qcow2("pinned")
	srv.put("/p.qcow2", body)
	s, _ := newStore(t, mapTranslator{"p": srv.URL + "/p.qcow2", "q": srv.URL + "/p.qcow2"})
	ctx := context.Background()

	wrong := "sha256:" + strings.Repeat("0", 64)
	_, err := s.Pull(ctx, "p@"+wrong, nil)
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("mismatch: err = %v", err)
	}
	if len(s.List()) != 0 || len(tmpEntries(t, s)) != 0 {
		t.Fatalf("mismatch stored something: %v %v", s.List(), tmpEntries(t, s))
	}
	if es, _ := os.ReadDir(s.blobDir()); len(es) != 0 {
		t.Fatalf("mismatch left a blob")
	}

	img, err := s.Pull(ctx, "p@"+sha(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.RepoTags) != 0 || img.RepoDigests[0] != "p@"+sha(body) {
		t.Fatalf("pinned pull record = %+v", img)
	}
	gets := srv.gets.Load()
	// A present digest is not downloaded again, even under another name.
	img2, err := s.Pull(ctx, "q@"+sha(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.gets.Load() != gets {
		t.Fatalf("pull of a present digest downloaded again")
	}
	if len(img2.RepoDigests) != 2 {
		t.Fatalf("second name not recorded: %+v", img2)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	srv := newServer(t)
	srv.put("/c.qcow2", qcow2(strings.Repeat("x", 1<<20)))
	srv.block = make(chan struct{})
	s, _ := newStore(t, mapTranslator{"c": srv.URL + "/c.qcow2", "alias": srv.URL + "/c.qcow2"})

	var wg sync.WaitGroup
	names := []string{"c", "c", "alias", "c:v1", "c"}
	results := make([]Image, len(names))
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.Pull(context.Background(), n, nil)
		}()
	}
	// Let every puller join before the body flows.
	deadline := time.Now().Add(5 * time.Second)
	for srv.gets.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(srv.block)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %s: %v", names[i], err)
		}
		if results[i].ID != results[0].ID {
			t.Fatalf("different IDs")
		}
	}
	if n := srv.gets.Load(); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
	img, _ := s.Get("c")
	if got := strings.Join(img.RepoTags, ","); got != "alias:latest,c:latest,c:v1" {
		t.Fatalf("RepoTags = %q", got)
	}
}

func TestCancelledPullLeavesNothing(t *testing.T) {
	srv := newServer(t)
	srv.put("/slow.qcow2", qcow2("slow"))
	srv.block = make(chan struct{})
	defer close(srv.block)
	s, _ := newStore(t, mapTranslator{"slow": srv.URL + "/slow.qcow2"})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := s.Pull(ctx, "slow", nil); done <- err }()
	for srv.gets.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// The download goroutine removes its temp file when it sees the cancel.
	deadline := time.Now().Add(5 * time.Second)
	for len(tmpEntries(t, s)) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if left := tmpEntries(t, s); len(left) != 0 || len(s.List()) != 0 {
		t.Fatalf("left behind: tmp %v, images %v", left, s.List())
	}
}

func TestPullErrors(t *testing.T) {
	srv := newServer(t)
	srv.put("/backed.qcow2", qcow2("BACKING"))
	srv.put("/page.img", []byte("<html><body>not an image</body></html>"))
	srv.put("/odd.img", []byte{1, 2, 3})
	srv.status["/boom"] = http.StatusInternalServerError
	srv.status["/forbidden"] = http.StatusForbidden
	truncating := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write(qcow2("short"))
	}))
	defer truncating.Close()
	s, _ := newStore(t, mapTranslator{
		"missing":   srv.URL + "/missing.qcow2",
		"backed":    srv.URL + "/backed.qcow2",
		"page":      srv.URL + "/page.img",
		"odd":       srv.URL + "/odd.img",
		"boom":      srv.URL + "/boom",
		"forbidden": srv.URL + "/forbidden",
		"trunc":     truncating.URL + "/t.qcow2",
		"refused":   "http://127.0.0.1:1/x.qcow2",
	})
	for _, tc := range []struct {
		name  string
		class error
		want  string
	}{
		{"untranslated", errdefs.ErrInvalidArgument, "so it was taken as an OCI reference"},
		{"missing", errdefs.ErrNotFound, "404 Not Found"},
		{"backed", errdefs.ErrInvalidArgument, "backing file"},
		{"page", errdefs.ErrInvalidArgument, "not a disk image"},
		{"odd", errdefs.ErrInvalidArgument, "512-byte sectors"},
		{"boom", errdefs.ErrUnavailable, "500 Internal Server Error"},
		{"forbidden", errdefs.ErrPermissionDenied, "403 Forbidden"},
		{"trunc", errdefs.ErrUnavailable, "truncated"},
		{"refused", errdefs.ErrUnavailable, "reachable"},
		{"bad@sha256:xyz", errdefs.ErrInvalidArgument, "digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Pull(context.Background(), tc.name, nil)
			if err == nil || !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want class %v containing %q", err, tc.class, tc.want)
			}
			if len(s.List()) != 0 || len(tmpEntries(t, s)) != 0 {
				t.Fatalf("failed pull left images %v / temp files %v", s.List(), tmpEntries(t, s))
			}
		})
	}
}

func TestRepullUnchangedAndMovedTag(t *testing.T) {
	srv := newServer(t)
	srv.put("/m.qcow2", qcow2("v1"))
	s, _ := newStore(t, mapTranslator{"m": srv.URL + "/m.qcow2"})
	ctx := context.Background()
	v1, err := s.Pull(ctx, "m", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, "m", nil); err != nil {
		t.Fatal(err)
	}
	if n := srv.gets.Load(); n != 1 {
		t.Fatalf("unchanged re-pull downloaded: %d bodies", n)
	}
	srv.put("/m.qcow2", qcow2("v2"))
	v2, err := s.Pull(ctx, "m", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v2.ID == v1.ID {
		t.Fatal("changed file kept the old ID")
	}
	old, err := s.Get(v1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(old.RepoTags) != 0 {
		t.Fatalf("tag not moved off the old image: %v", old.RepoTags)
	}
}

func TestRemove(t *testing.T) {
	srv := newServer(t)
	srv.put("/r.qcow2", qcow2("r"))
	srv.put("/u.qcow2", qcow2("used"))
	s, _ := newStore(t, mapTranslator{"r": srv.URL + "/r.qcow2", "r2": srv.URL + "/r.qcow2", "u": srv.URL + "/u.qcow2"})
	ctx := context.Background()
	img, _ := s.Pull(ctx, "r", nil)
	if _, err := s.Pull(ctx, "r2:x", nil); err != nil {
		t.Fatal(err)
	}
	// Removing by one name removes all names of the digest, and the file.
	if err := s.Remove("r2:x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("r"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("other name survived: %v", err)
	}
	if _, err := os.Stat(s.Path(img.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file survived: %v", err)
	}
	if err := s.Remove("r"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	used, _ := s.Pull(ctx, "u", nil)
	s.SetInUse(func(id string) bool { return id == used.ID })
	if err := s.Remove("u"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path(used.ID)); err != nil {
		t.Fatalf("in-use file deleted: %v", err)
	}
	s.SetInUse(func(string) bool { return false })
	s.Release(used.ID)
	if _, err := os.Stat(s.Path(used.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released file of a removed image kept: %v", err)
	}
}

func TestOpenReconciles(t *testing.T) {
	srv := newServer(t)
	srv.put("/k.qcow2", qcow2("keep"))
	srv.put("/g.qcow2", qcow2("gone"))
	s, dir := newStore(t, mapTranslator{"k": srv.URL + "/k.qcow2", "g": srv.URL + "/g.qcow2"})
	ctx := context.Background()
	keep, _ := s.Pull(ctx, "k", nil)
	gone, _ := s.Pull(ctx, "g", nil)
	os.Chmod(s.Path(gone.ID), 0o644)
	os.Remove(s.Path(gone.ID))
	orphan := filepath.Join(s.blobDir(), strings.Repeat("a", 64))
	os.WriteFile(orphan, []byte("x"), 0o644)
	os.WriteFile(filepath.Join(s.tmpDir(), "pull-123"), []byte("partial"), 0o644)

	s2, err := Open(Options{Dir: filepath.Join(dir, "images"), Meta: s.opts.Meta, Translator: s.opts.Translator, Checker: fakeChecker{}, Log: s.log})
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.List(); len(got) != 1 || got[0].ID != keep.ID {
		t.Fatalf("after reopen: %+v", got)
	}
	usedOrphan := filepath.Join(s.blobDir(), strings.Repeat("b", 64))
	os.WriteFile(usedOrphan, []byte("y"), 0o644)
	s2.SetInUse(func(id string) bool { return id == "sha256:"+strings.Repeat("b", 64) })
	if err := s2.RemoveUnreferenced(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("orphan file kept")
	}
	if _, err := os.Stat(usedOrphan); err != nil {
		t.Fatal("orphan file still used by a container was deleted")
	}
	if _, err := os.Stat(s.Path(keep.ID)); err != nil {
		t.Fatal("recorded image deleted")
	}
	if len(tmpEntries(t, s2)) != 0 {
		t.Fatal("partial download kept")
	}
}

func TestUsageCountsStoreOnly(t *testing.T) {
	srv := newServer(t)
	srv.put("/big.qcow2", qcow2(strings.Repeat("y", 256<<10)))
	s, _ := newStore(t, mapTranslator{"big": srv.URL + "/big.qcow2"})
	before, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), "big", nil); err != nil {
		t.Fatal(err)
	}
	after, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if after.UsedBytes < before.UsedBytes+256<<10 || after.Inodes != before.Inodes+1 {
		t.Fatalf("usage before %+v after %+v", before, after)
	}
}

func TestParseReference(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in                string
		repo, tag, digest string
		bad               bool
	}{
		{in: "cirros", repo: "cirros", tag: "latest"},
		{in: "vms/debian:12", repo: "vms/debian", tag: "12"},
		{in: "host:5000/img", repo: "host:5000/img", tag: "latest"},
		{in: "host:5000/img:v2", repo: "host:5000/img", tag: "v2"},
		{in: "img@" + d, repo: "img", digest: d},
		{in: "img:1@" + d, repo: "img", tag: "1", digest: d},
		{in: "", bad: true},
		{in: "img@sha256:short", bad: true},
		{in: "img:", bad: true},
		{in: "has space", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseReference(tc.in)
			if tc.bad {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || r.Repo != tc.repo || r.Tag != tc.tag || r.Digest != tc.digest {
				t.Fatalf("got %+v, %v", r, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		info DiskInfo
		want string
	}{
		{"qcow2 ok", DiskInfo{Format: "qcow2"}, ""},
		{"backing", DiskInfo{Format: "qcow2", Backing: "/etc/shadow"}, "backing file"},
		{"data file", func() DiskInfo { d := DiskInfo{Format: "qcow2"}; d.Specific.Data.DataFile = "/dev/sda"; return d }(), "data file"},
		{"encrypted", DiskInfo{Format: "qcow2", Encrypted: true}, "encrypted"},
		{"vmdk", DiskInfo{Format: "vmdk"}, "only qcow2 and raw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.info, "/nonexistent")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPullReportsDownloadedBytes(t *testing.T) {
	srv := newServer(t)
	body := qcow2(strings.Repeat("d", 100000))
	srv.put("/d.qcow2", body)
	s, _ := newStore(t, mapTranslator{"d": srv.URL + "/d.qcow2"})
	var got []int64
	s.opts.Downloaded = func(n int64) { got = append(got, n) }
	ctx := context.Background()
	for range 2 {
		if _, err := s.Pull(ctx, "d", nil); err != nil {
			t.Fatal(err)
		}
	}
	// The re-pull is answered 304: nothing downloaded, nothing reported.
	if len(got) != 1 || got[0] != int64(len(body)) {
		t.Fatalf("reported downloads %v, want [%d]", got, len(body))
	}
}
