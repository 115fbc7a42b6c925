package image

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestPullStoresContentAddressed(t *testing.T) {
	srv := newServer(t)
	body := fakeQcow2("disk one")
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
	body := fakeQcow2("pinned")
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
	srv.put("/c.qcow2", fakeQcow2(strings.Repeat("x", 1<<20)))
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
	srv.put("/slow.qcow2", fakeQcow2("slow"))
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
	srv.put("/backed.qcow2", fakeQcow2("BACKING"))
	srv.put("/page.img", []byte("<html><body>not an image</body></html>"))
	srv.put("/odd.img", []byte{1, 2, 3})
	srv.status["/boom"] = http.StatusInternalServerError
	srv.status["/forbidden"] = http.StatusForbidden
	truncating := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write(fakeQcow2("short"))
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
	srv.put("/m.qcow2", fakeQcow2("v1"))
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
	srv.put("/m.qcow2", fakeQcow2("v2"))
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

func TestPullReportsDownloadedBytes(t *testing.T) {
	srv := newServer(t)
	body := fakeQcow2(strings.Repeat("d", 100000))
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
