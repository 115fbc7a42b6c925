package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is go-containerregistry's in-memory registry on 127.0.0.1
// (plain HTTP), optionally behind basic auth, counting blob downloads.
type testRegistry struct {
	t    *testing.T
	host string

	mu         sync.Mutex
	user, pass string
	// private, when set, limits the basic auth to repositories under
	// that prefix ("alice/"); the others are anonymous.
	private  string
	blobGets map[string]int
	// authSeen counts reads (GET, HEAD) that carried credentials.
	authSeen int
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{t: t, blobGets: map[string]int{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, pass := r.user, r.pass
		// The ping (/v2/) still answers with the challenge, so clients
		// know to send credentials, as registries with per-repository
		// access do.
		if r.private != "" && req.URL.Path != "/v2/" && !strings.HasPrefix(req.URL.Path, "/v2/"+r.private) {
			user = ""
		}
		if i := strings.LastIndex(req.URL.Path, "/blobs/sha256:"); i >= 0 && req.Method == http.MethodGet {
			r.blobGets[req.URL.Path[i+len("/blobs/"):]]++
		}
		// containers/image answers a challenge without credentials with
		// an empty Basic pair (":"), which is no credential.
		if u, p, _ := req.BasicAuth(); (u != "" || p != "" || strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ")) &&
			(req.Method == http.MethodGet || req.Method == http.MethodHead) {
			r.authSeen++
		}
		r.mu.Unlock()
		if user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *testRegistry) gets(d string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d]
}

func (r *testRegistry) opts() []remote.Option {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.user == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass})}
}

func (r *testRegistry) ref(repoTag string) name.Reference {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return ref
}

// containerDisk builds a one-layer (gzip) containerDisk holding disk as
// /disk/disk.img, with a correct config.
func containerDisk(t *testing.T, disk []byte) v1.Image {
	t.Helper()
	return oneFileImage(t, "disk/disk.img", disk)
}

// oneFileImage builds a one-layer (gzip) image holding content as path
// (under one directory), with a correct config.
func oneFileImage(t *testing.T, path string, content []byte) v1.Image {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: path[:strings.Index(path, "/")+1], Typeflag: tar.TypeDir, Mode: 0o555})
	tw.WriteHeader(&tar.Header{Name: path, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(content))})
	tw.Write(content)
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.MediaType(empty.Image, ggcrtypes.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, ggcrtypes.OCIConfigJSON)
	cfg, _ := base.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push uploads img as repoTag and returns the full name.
func (r *testRegistry) push(img v1.Image, repoTag string) string {
	r.t.Helper()
	ref := r.ref(repoTag)
	if err := remote.Write(ref, img, r.opts()...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }
func (m rawManifest) MediaType() (ggcrtypes.MediaType, error) {
	return ggcrtypes.OCIManifestSchema1, nil
}

// pushForged pushes as repoTag a manifest whose config blob is config
// (any bytes: another image's config, a disk file) and whose layers are
// those of img: the attack of a hostile registry.
func (r *testRegistry) pushForged(repoTag string, config []byte, img v1.Image) string {
	r.t.Helper()
	ref := r.ref(repoTag)
	if err := remote.WriteLayer(ref.Context(), static.NewLayer(config, ggcrtypes.OCIConfigJSON), r.opts()...); err != nil {
		r.t.Fatal(err)
	}
	layers, _ := img.Layers()
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, string(ggcrtypes.OCIManifestSchema1), desc{string(ggcrtypes.OCIConfigJSON), sha(config), int64(len(config))}, nil}
	for _, l := range layers {
		if err := remote.WriteLayer(ref.Context(), l, r.opts()...); err != nil {
			r.t.Fatal(err)
		}
		d, _ := l.Digest()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		m.Layers = append(m.Layers, desc{string(mt), d.String(), size})
	}
	b, _ := json.Marshal(m)
	if err := remote.Put(ref, rawManifest(b), r.opts()...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// trustRegistry writes a registries.conf that lets the store pull from
// reg over plain HTTP.
func trustRegistry(t *testing.T, s *Store, reg *testRegistry) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.host)), 0o644); err != nil {
		t.Fatal(err)
	}
	s.opts.OCI.RegistriesConf = p
}

// storedBytes returns the content of the file the store serves for ref.
func storedBytes(t *testing.T, s *Store, ref string) []byte {
	t.Helper()
	img, err := s.Get(ref)
	if err != nil {
		t.Fatalf("Get(%s): %v", ref, err)
	}
	b, err := os.ReadFile(s.Path(img.ID))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
