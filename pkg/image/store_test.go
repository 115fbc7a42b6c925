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
			return DiskInfo{}, fmt.Errorf("image has a backing file %q: %w", "/etc/passwd", errdefs.ErrInvalidArgument)
		}
		return info, nil
	}
	return info, checkRaw(b[:min(len(b), 512)], int64(len(b)))
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

func fakeQcow2(content string) []byte {
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

func TestOpenReconciles(t *testing.T) {
	srv := newServer(t)
	srv.put("/k.qcow2", fakeQcow2("keep"))
	srv.put("/g.qcow2", fakeQcow2("gone"))
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
