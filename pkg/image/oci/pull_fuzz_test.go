package oci

import (
	"bytes"
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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.podman.io/image/v5/pkg/compression"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// hostileRegistry serves whatever the current fuzz input says: a top
// manifest (for the tag and its digest) of a given media type, a child
// manifest (for its digest, as an index entry), and two blobs, a config
// and a layer, each under its own digest. Placeholders in the manifests
// and config are replaced by the real digests and sizes, so the fuzzer
// starts from consistent images and mutates from there.
type hostileRegistry struct {
	srv *httptest.Server

	mu                sync.Mutex
	top               []byte
	topType           string
	blobs             map[string][]byte
	manifestsByDigest map[string][]byte
	typesByDigest     map[string]string
}

func newHostileRegistry(tb testing.TB) *hostileRegistry {
	r := &hostileRegistry{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.srv.Close)
	return r
}

func (r *hostileRegistry) host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func (r *hostileRegistry) serve(w http.ResponseWriter, req *http.Request) {
	// Not held while writing: a client that stops reading a blob must not
	// block the next input's set.
	r.mu.Lock()
	top, topType, blobs, byDigest, types := r.top, r.topType, r.blobs, r.manifestsByDigest, r.typesByDigest
	r.mu.Unlock()
	p := req.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, "/v2/vms/x/manifests/"):
		ref := strings.TrimPrefix(p, "/v2/vms/x/manifests/")
		body, mt := top, topType
		if ref != "1" {
			var ok bool
			if body, ok = byDigest[ref]; !ok {
				http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
				return
			}
			mt = types[ref]
		}
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", sha256Digest(body))
		if req.Method != http.MethodHead {
			w.Write(body)
		}
	case strings.HasPrefix(p, "/v2/vms/x/blobs/"):
		b, ok := blobs[strings.TrimPrefix(p, "/v2/vms/x/blobs/")]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if req.Method != http.MethodHead {
			w.Write(b)
		}
	default:
		http.NotFound(w, req)
	}
}

// set loads one fuzz input, filling the placeholders CONFIG_DIGEST,
// CONFIG_SIZE, LAYER_DIGEST, LAYER_SIZE, CHILD_DIGEST, CHILD_SIZE (in the
// manifests) and DIFF_ID (in the config: the digest of the layer
// decompressed, as far as it decompresses).
func (r *hostileRegistry) set(top, child []byte, topType, childType string, config, layer []byte) {
	diffID := sha256Digest(nil)
	if dec, _, err := compression.AutoDecompress(bytes.NewReader(layer)); err == nil {
		h := sha256.New()
		io.Copy(h, io.LimitReader(dec, maxFuzzLayer))
		dec.Close()
		diffID = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	config = bytes.ReplaceAll(config, []byte("DIFF_ID"), []byte(diffID))
	fill := func(m []byte) []byte {
		for _, kv := range [][2]string{
			{"CONFIG_DIGEST", sha256Digest(config)}, {"CONFIG_SIZE", fmt.Sprint(len(config))},
			{"LAYER_DIGEST", sha256Digest(layer)}, {"LAYER_SIZE", fmt.Sprint(len(layer))},
		} {
			m = bytes.ReplaceAll(m, []byte(kv[0]), []byte(kv[1]))
		}
		return m
	}
	child = fill(child)
	top = fill(top)
	top = bytes.ReplaceAll(top, []byte("CHILD_DIGEST"), []byte(sha256Digest(child)))
	top = bytes.ReplaceAll(top, []byte("CHILD_SIZE"), []byte(fmt.Sprint(len(child))))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.top, r.topType = top, topType
	r.blobs = map[string][]byte{sha256Digest(config): config, sha256Digest(layer): layer}
	r.manifestsByDigest = map[string][]byte{sha256Digest(top): top, sha256Digest(child): child}
	r.typesByDigest = map[string]string{sha256Digest(top): topType, sha256Digest(child): childType}
}

// fuzzMediaTypes are the manifest media types a fuzz input picks from
// by index; an index past them uses the input's own text.
var fuzzMediaTypes = []string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"",
}

func pickMediaType(i uint8, other string) string {
	if int(i) < len(fuzzMediaTypes) {
		return fuzzMediaTypes[i]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, other)
}

// FuzzPull pulls from a registry that serves fuzzed manifests (an image
// manifest, or an index and its entry), a fuzzed config and a fuzzed
// layer, and checks:
//   - a failed pull has one of the error classes Pull documents, a
//     bounded message, and leaves nothing in the temporary directory;
//   - a successful pull's disk file is in the temporary directory and is
//     the content of the layer's disk entry, with that digest and size;
//     its manifest digest is the digest of a manifest the registry
//     served, and its image ID (config digest) that of the blob served as
//     its config.
func FuzzPull(f *testing.F) {
	reg := newHostileRegistry(f)
	dir := f.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.host())), 0o644); err != nil {
		f.Fatal(err)
	}
	ociManifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"CONFIG_DIGEST","size":CONFIG_SIZE},
"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"LAYER_DIGEST","size":LAYER_SIZE}]}`)
	dockerManifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"CONFIG_DIGEST","size":CONFIG_SIZE},
"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"LAYER_DIGEST","size":LAYER_SIZE,"urls":["http://127.0.0.1:1/x"]}]}`)
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"CHILD_DIGEST","size":CHILD_SIZE,"platform":{"architecture":"arm64","os":"linux"}},
{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"CHILD_DIGEST","size":CHILD_SIZE,"platform":{"architecture":"amd64","os":"linux"}}]}`)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["DIFF_ID"]}}`)
	gz := layerBlob(f, gzipped, dirEntry("disk/"), fileEntry("disk/d.qcow2", []byte("QFI\xfb disk bytes")))
	plain := layerBlob(f, uncompressed, fileEntry("etc/motd", []byte("hi")))
	f.Add(ociManifest, uint8(0), []byte{}, uint8(0), "", config, gz)
	f.Add(dockerManifest, uint8(1), []byte{}, uint8(0), "", config, gz)
	f.Add(index, uint8(2), ociManifest, uint8(0), "", config, gz)
	f.Add(ociManifest, uint8(0), []byte{}, uint8(0), "", config, plain)
	f.Add(ociManifest, uint8(0), []byte{}, uint8(0), "", []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`), gz)
	f.Add(ociManifest, uint8(9), []byte{}, uint8(0), "application/vnd.oci.image.manifest.v1+json; charset=x", config, []byte("not a tar"))
	f.Add([]byte(`{"schemaVersion":1,"name":"vms/x","tag":"1","fsLayers":[]}`), uint8(4), []byte{}, uint8(0), "", config, gz)
	f.Add(bytes.Replace(ociManifest, []byte(`tar+gzip"`), []byte(`tar+gzip+encrypted"`), 1), uint8(0), []byte{}, uint8(0), "", config, gz)
	f.Fuzz(func(t *testing.T, top []byte, topType uint8, child []byte, childType uint8, otherType string, config, layer []byte) {
		reg.set(top, child, pickMediaType(topType, otherType), pickMediaType(childType, otherType), config, layer)
		tmp := t.TempDir()
		opts := Options{
			TmpDir:            tmp,
			RegistriesConf:    conf,
			RegistriesConfDir: filepath.Join(dir, "registries.conf.d"),
			AuthFile:          filepath.Join(dir, "auth.json"),
			CertDir:           filepath.Join(dir, "certs.d"),
			Arch:              "amd64",
			ProgressInterval:  time.Hour,
			Log:               slog.New(slog.NewTextHandler(io.Discard, nil)),
			Limits:            transfer.Limits{MaxImageSize: maxFuzzLayer - layerSlack, RequestTimeout: 2 * time.Second, StallTimeout: 2 * time.Second},
		}
		// Short deadlines: the fuzzing engine kills a worker whose input
		// runs for 10 s (golang/go#56238), and nothing here is slow.
		res, err := Pull(t.Context(), reg.host()+"/vms/x:1", nil, opts)
		left, _ := os.ReadDir(tmp)
		if err != nil {
			classes := []error{errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied,
				errdefs.ErrFailedPrecondition, errdefs.ErrResourceExhausted, errdefs.ErrUnavailable, errdefs.ErrNotImplemented}
			if !slices.ContainsFunc(classes, func(c error) bool { return errors.Is(err, c) }) {
				t.Fatalf("Pull failed with %v, which has no documented class", err)
			}
			if len(err.Error()) > 16<<10 {
				t.Fatalf("Pull's error has %d bytes", len(err.Error()))
			}
			if len(left) != 0 {
				t.Fatalf("a failed pull left %s in the temp dir", left[0].Name())
			}
			return
		}
		if len(left) != 1 || filepath.Join(tmp, left[0].Name()) != res.TmpFile {
			t.Fatalf("the temp dir holds %v, want only %s", left, res.TmpFile)
		}
		disk, err := os.ReadFile(res.TmpFile)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := lastEntry(layer, strings.TrimPrefix(res.DiskPath, "/"))
		if !ok || !bytes.Equal(disk, want) || res.Size != int64(len(disk)) || res.DiskDigest != sha256Digest(disk) {
			t.Fatalf("disk %s: %d bytes (%s, size %d), the layer holds %d (%v)", res.DiskPath, len(disk), res.DiskDigest, res.Size, len(want), ok)
		}
		reg.mu.Lock()
		_, servedManifest := reg.manifestsByDigest[res.ManifestDigest]
		_, servedBlob := reg.blobs[res.ConfigDigest]
		reg.mu.Unlock()
		if !servedManifest || !servedBlob {
			t.Fatalf("identity %+v names a manifest (%v) or config (%v) the registry did not serve", res.Identity, servedManifest, servedBlob)
		}
	})
}
