package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// testRegistry is go-containerregistry's in-memory registry on
// 127.0.0.1, plain HTTP, with hooks: basic auth, a corrupted blob, a
// stalled blob, and a log of blob requests.
type testRegistry struct {
	t    *testing.T
	srv  *httptest.Server
	host string // 127.0.0.1:port

	mu        sync.Mutex
	user      string // basic auth required when set
	pass      string
	corrupt   string        // digest of a blob served with one byte flipped
	stall     string        // digest of a blob served partly, then held until the client goes
	stalled   chan struct{} // closed once the stalled blob's first bytes are sent
	throttle  time.Duration // pause between 64 KiB chunks of blobs
	blobsRead map[string]int
	// silent makes the registry accept requests for manifests and never
	// answer them (until the client goes).
	silent bool
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{t: t, blobsRead: map[string]int{}}
	inner := registry.New(registry.Logger(nopLogger()))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, pass, corrupt, stall, throttle := r.user, r.pass, r.corrupt, r.stall, r.throttle
		r.mu.Unlock()
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		r.mu.Lock()
		silent := r.silent
		r.mu.Unlock()
		if silent && strings.Contains(req.URL.Path, "/manifests/") {
			<-req.Context().Done()
			return
		}
		d, isBlob := blobDigest(req)
		if !isBlob || req.Method != http.MethodGet {
			inner.ServeHTTP(w, req)
			return
		}
		r.mu.Lock()
		r.blobsRead[d]++
		r.mu.Unlock()
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if rec.Code == http.StatusOK && d == corrupt && len(body) > 0 {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		if rec.Code == http.StatusOK && d == stall {
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			close(r.stalled)
			<-req.Context().Done()
			return
		}
		for len(body) > 0 {
			n := min(len(body), 64<<10)
			if _, err := w.Write(body[:n]); err != nil {
				return
			}
			body = body[n:]
			if throttle > 0 {
				w.(http.Flusher).Flush()
				time.Sleep(throttle)
			}
		}
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// blobDigest returns the digest of a /v2/<repo>/blobs/<digest> request.
func blobDigest(req *http.Request) (string, bool) {
	p := req.URL.Path
	i := strings.LastIndex(p, "/blobs/")
	if !strings.HasPrefix(p, "/v2/") || i < 0 || strings.Contains(p[i+len("/blobs/"):], "/") {
		return "", false
	}
	return p[i+len("/blobs/"):], true
}

func (r *testRegistry) requireAuth(user, pass string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.pass = user, pass
}

func (r *testRegistry) reads(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobsRead[digest]
}

func (r *testRegistry) remoteOpts() []remote.Option {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.user == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass})}
}

// push uploads img as repoTag ("vms/debian:1") and returns its full name.
func (r *testRegistry) push(img v1.Image, repoTag string) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(ref, img, r.remoteOpts()...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

func (r *testRegistry) pushIndex(idx v1.ImageIndex, repoTag string) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.remoteOpts()...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// entry is one tar entry of a test layer.
type entry struct {
	name     string
	typeflag byte // tar.TypeReg when 0
	content  []byte
	linkname string
}

func fileEntry(name string, content []byte) entry { return entry{name: name, content: content} }
func dirEntry(name string) entry                  { return entry{name: name, typeflag: tar.TypeDir} }

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }

type compressionKind int

const (
	gzipped compressionKind = iota
	uncompressed
	zstdCompressed
)

// layer builds a layer blob of entries, compressed as c, with the OCI
// media type that says so (docker selects Docker's).
func layer(t *testing.T, c compressionKind, docker bool, entries ...entry) v1.Layer {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typeflag, Mode: 0o444, Uid: 107, Gid: 107, ModTime: time.Unix(1700000000, 0), Linkname: e.linkname}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o555
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(e.content); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var blob bytes.Buffer
	var mt ggcrtypes.MediaType
	switch c {
	case gzipped:
		zw := gzip.NewWriter(&blob)
		zw.Write(tarBuf.Bytes())
		zw.Close()
		mt = ggcrtypes.OCILayer
		if docker {
			mt = ggcrtypes.DockerLayer
		}
	case zstdCompressed:
		zw, err := zstd.NewWriter(&blob)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(tarBuf.Bytes())
		zw.Close()
		mt = ggcrtypes.OCILayerZStd
	case uncompressed:
		blob = tarBuf
		mt = ggcrtypes.OCIUncompressedLayer
		if docker {
			mt = ggcrtypes.DockerUncompressedLayer
		}
	}
	sum := sha256.Sum256(tarBuf.Bytes())
	return diffLayer{static.NewLayer(blob.Bytes(), mt), v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

// diffLayer is a layer whose diff_id (the digest of its uncompressed tar,
// which the image config lists) is given: static.NewLayer reports the
// compressed digest.
type diffLayer struct {
	v1.Layer
	diffID v1.Hash
}

func (l diffLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// buildImage builds an OCI image (Docker schema 2 when docker) of layers for
// linux/arch.
func buildImage(t *testing.T, docker bool, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	base := empty.Image
	if !docker {
		base = mutate.MediaType(base, ggcrtypes.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, ggcrtypes.OCIConfigJSON)
	}
	cfg, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// randomDisk returns n random bytes and their "sha256:<hex>".
func randomDisk(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, sha256Digest(b)
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// testOptions returns Options for a pull from the registries at hosts,
// with a registries.conf in a temp dir marking them insecure (plain HTTP)
// followed by extraConf.
func testOptions(t *testing.T, extraConf string, hosts ...string) Options {
	t.Helper()
	d := t.TempDir()
	var conf strings.Builder
	conf.WriteString(extraConf + "\n")
	for _, h := range hosts {
		fmt.Fprintf(&conf, "[[registry]]\nlocation = %q\ninsecure = true\n\n", h)
	}
	confPath := filepath.Join(d, "registries.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(d, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{
		TmpDir:            tmp,
		RegistriesConf:    confPath,
		RegistriesConfDir: filepath.Join(d, "registries.conf.d"),
		AuthFile:          filepath.Join(d, "auth.json"), // missing: no stored credentials
		CertDir:           filepath.Join(d, "certs.d"),
		ProgressInterval:  time.Hour,
		Log:               slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
