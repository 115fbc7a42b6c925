package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
)

// The tests of this file attack the image store as a hostile registry,
// image server or tenant would (issue 13), against the real registry
// (Debian's docker-registry) and the real daemon. go-containerregistry is
// only the client that pushes what a hostile registry user can push.

func (r *registry) ref(t *testing.T, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.addr+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// image reads an image back from the registry.
func (r *registry) image(t *testing.T, repoTag string) v1.Image {
	t.Helper()
	img, err := remote.Image(r.ref(t, repoTag))
	if err != nil {
		t.Fatalf("read %s back: %v", repoTag, err)
	}
	return img
}

type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }
func (m rawManifest) MediaType() (ggcrtypes.MediaType, error) {
	return ggcrtypes.OCIManifestSchema1, nil
}

// pushForged pushes as repoTag an OCI manifest whose config blob is config
// (any bytes) and whose layers are layers.
func (r *registry) pushForged(t *testing.T, repoTag string, config []byte, layers []v1.Layer) {
	t.Helper()
	ref := r.ref(t, repoTag)
	if err := remote.WriteLayer(ref.Context(), static.NewLayer(config, ggcrtypes.OCIConfigJSON)); err != nil {
		t.Fatal(err)
	}
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
	}{2, string(ggcrtypes.OCIManifestSchema1), desc{string(ggcrtypes.OCIConfigJSON), bytesDigest(config), int64(len(config))}, nil}
	for _, l := range layers {
		if err := remote.WriteLayer(ref.Context(), l); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		m.Layers = append(m.Layers, desc{string(mt), d.String(), size})
	}
	b, _ := json.Marshal(m)
	if err := remote.Put(ref, rawManifest(b)); err != nil {
		t.Fatalf("push forged %s: %v", repoTag, err)
	}
}

func bytesDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// imageInfo is what `crictl inspecti` shows of an image.
type imageInfo struct {
	Status struct{ ID string }
	Info   struct {
		Path    string
		Origins []struct{ URL string }
	}
}

func (d *daemon) inspecti(ref string) imageInfo {
	d.t.Helper()
	var ii imageInfo
	if err := json.Unmarshal([]byte(d.mustCrictl("inspecti", ref)), &ii); err != nil {
		d.t.Fatal(err)
	}
	return ii
}

// storeEmpty fails unless the image store holds no file at all.
func storeEmpty(t *testing.T, d *daemon) {
	t.Helper()
	for _, sub := range []string{"images/tmp", "images/sha256"} {
		es, err := os.ReadDir(filepath.Join(d.StateDir(), sub))
		if err != nil || len(es) != 0 {
			t.Errorf("%s holds %v (%v)", sub, es, err)
		}
	}
}

// TestImageSubstitutionAttack: a registry user pushes a manifest whose
// config blob is another image's config (or the bytes of a public HTTP
// image) with their own disk. Before the fix vmpod stored the attacker's
// disk under the victim's ID and served it to later pulls of the real
// image (by tag, by pinned digest, over HTTP). Now the forged pulls fail,
// and the real pulls store, and boot, the real bytes.
func TestImageSubstitutionAttack(t *testing.T) {
	guest := guestImage(t)
	reg := startRegistry(t, "", "")
	reg.push(t, guest, "vms/real:1", "")
	dir := t.TempDir()
	evilDisk := filepath.Join(dir, "evil.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", evilDisk, "64M")
	reg.push(t, evilDisk, "evil/src:1", "")
	evilLayers, err := reg.image(t, "evil/src:1").Layers()
	if err != nil {
		t.Fatal(err)
	}
	realCfg, err := reg.image(t, "vms/real:1").RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	srv := newFileServer(t)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", srv.path("public.qcow2"), "32M")
	public, _ := os.ReadFile(srv.path("public.qcow2"))
	reg.pushForged(t, "evil/x:1", realCfg, evilLayers)
	reg.pushForged(t, "evil/y:1", public, evilLayers)

	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_REGISTRIES_CONF=" + registriesConf(t, reg)}})
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	t.Cleanup(e.cleanupAll)
	d.writeTranslations("public.toml", fmt.Sprintf("[[translations]]\nname = \"public\"\nurl = \"%s/public.qcow2\"\n", srv.URL))

	for ref, want := range map[string]string{"evil/x:1": "diff_id", "evil/y:1": "not an image config"} {
		// Not fatal: the checks below show what a pull that got through did.
		out, errOut, err := d.crictl("pull", reg.addr+"/"+ref)
		if err == nil || !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, want) {
			t.Errorf("forged %s: %v %s%s", ref, err, out, errOut)
		}
	}
	if t.Failed() {
		t.Log(d.mustCrictl("images", "--digests"))
	} else {
		storeEmpty(t, d)
	}

	guestDigest, publicDigest := fileDigest(t, guest), fileDigest(t, srv.path("public.qcow2"))
	realRef := reg.addr + "/vms/real:1"
	d.mustCrictl("pull", realRef)
	d.mustCrictl("pull", "public@"+publicDigest)
	d.mustCrictl("pull", "public")
	for ref, want := range map[string]string{realRef: guestDigest, "public": publicDigest, "public@" + publicDigest: publicDigest} {
		if got := fileDigest(t, d.inspecti(ref).Info.Path); got != want {
			t.Errorf("%s is stored as a file with digest %s, want %s", ref, got, want)
		}
	}

	if t.Failed() {
		return // the store is wrong already; no VM to boot
	}
	// The disk a container uses: its root overlay's backing file, and the
	// guest boots from it.
	f := e.podConfigs("real", 0, nil)
	f.ctr = e.writeJSON("real-ctr.json", map[string]any{
		"metadata": map[string]any{"name": "vm"}, "image": map[string]any{"image": realRef}, "log_path": "vm/0.log",
	})
	podID := strings.TrimSpace(e.mustCrictl("runp", f.pod))
	ctrID := strings.TrimSpace(e.mustCrictl("create", podID, f.ctr, f.pod))
	disks := e.inspect(ctrID).Info.Disks
	var overlay struct {
		Backing string `json:"full-backing-filename"`
	}
	out := run(t, "qemu-img", "info", "-U", "--output=json", disks["root"])
	if err := json.Unmarshal([]byte(out), &overlay); err != nil {
		t.Fatal(err)
	}
	if got := fileDigest(t, overlay.Backing); got != guestDigest || overlay.Backing != disks["image"] {
		t.Fatalf("the container's root disk is backed by %s (digest %s); want the real guest %s", overlay.Backing, got, guestDigest)
	}
	e.mustCrictl("start", ctrID)
	waitLog(t, f.logPath, readyRE, bootTimeout)
}

// bombLayer is a gzip layer: the disk file (diskBytes of a repeated
// non-zero pattern, so it is neither sparse nor big compressed), then a
// file outside /disk/ of padBytes.
func bombLayer(t *testing.T, diskBytes, padBytes int64) v1.Layer {
	t.Helper()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	block := bytes.Repeat([]byte("vmpod bomb "), 4096)
	write := func(name string, n int64) {
		if n == 0 {
			return
		}
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, Size: n})
		for left := n; left > 0; {
			k := min(left, int64(len(block)))
			tw.Write(block[:k])
			left -= k
		}
	}
	tw.WriteHeader(&tar.Header{Name: "disk/", Typeflag: tar.TypeDir, Mode: 0o555})
	write("disk/disk.raw", diskBytes)
	write("junk/pad", padBytes)
	tw.Close()
	zw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gz.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDecompressionBombRefused: layers of a few hundred KiB that inflate
// past max_image_size are refused: a disk whose tar header is too large
// before a byte is written, a disk followed by more inflated data once the
// stream passes the limit, with the disk written so far removed.
func TestDecompressionBombRefused(t *testing.T) {
	reg := startRegistry(t, "", "")
	for tag, sizes := range map[string][2]int64{"disk": {256 << 20, 0}, "padded": {48 << 20, 512 << 20}} {
		l := bombLayer(t, sizes[0], sizes[1])
		compressed, _ := l.Size()
		t.Logf("bomb %s: %d bytes compressed, %d uncompressed", tag, compressed, sizes[0]+sizes[1])
		base := mutate.MediaType(empty.Image, ggcrtypes.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, ggcrtypes.OCIConfigJSON)
		img, err := mutate.AppendLayers(base, l)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(reg.ref(t, "bombs/"+tag+":1"), img); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_REGISTRIES_CONF=" + registriesConf(t, reg), "VMPOD_MAX_IMAGE_SIZE=64Mi"}})
	tmp := filepath.Join(d.StateDir(), "images", "tmp")
	for _, tc := range []struct{ tag, want string }{
		{"disk", "the disk file is 268435456 bytes"}, // refused from the tar header: nothing written
		{"padded", "layer 1 uncompressed"},           // 48 MiB of disk written, then refused
	} {
		// Watch the space the download takes while it runs.
		done := make(chan struct{})
		peak := make(chan int64, 1)
		go func() {
			var max int64
			for {
				select {
				case <-done:
					peak <- max
					return
				case <-time.After(10 * time.Millisecond):
					max = maxInt(max, allocated(tmp))
				}
			}
		}()
		start := time.Now()
		errOut := d.failCrictl("pull", reg.addr+"/bombs/"+tc.tag+":1")
		close(done)
		took, most := time.Since(start), <-peak
		if !strings.Contains(errOut, "ResourceExhausted") || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "max_image_size") {
			t.Errorf("bomb %s: %s", tc.tag, errOut)
		}
		t.Logf("bomb %s refused in %.1fs; the download took up to %d bytes, %d after", tc.tag, took.Seconds(), most, allocated(tmp))
		if tc.tag == "padded" && most < 1<<20 {
			t.Errorf("the padded bomb's disk was never seen written (peak %d bytes): the test proves nothing about freeing it", most)
		}
		storeEmpty(t, d)
	}
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images after the bombs: %q", out)
	}
	du := run(t, "du", "-sb", filepath.Join(d.StateDir(), "images"))
	t.Logf("image store after the bombs: %s", strings.TrimSpace(du))
}

// closeDelimitedServer serves path's content as HTTP/1.1 answers without a
// length, ending the body by closing the connection, cut bytes short.
func closeDelimitedServer(t *testing.T, content []byte, cut int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
		buf.Write(content[:len(content)-cut])
		buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestTruncatedCloseDelimitedDownloadRefused: a server that sends no
// Content-Length and loses the connection before the end makes a body
// that looks complete; `qemu-img info` accepts such a qcow2. vmpod refuses
// it by the image's own tables (and keeps the whole one).
func TestTruncatedCloseDelimitedDownloadRefused(t *testing.T) {
	guest, _ := os.ReadFile(guestImage(t))
	whole := closeDelimitedServer(t, guest, 0)
	cut := closeDelimitedServer(t, guest, 100_000)
	d := startDaemon(t, daemonOpts{})
	d.writeTranslations("t.toml", fmt.Sprintf("[[translations]]\nname = \"whole\"\nurl = \"%s/g.qcow2\"\n\n[[translations]]\nname = \"cut\"\nurl = \"%s/g.qcow2\"\n", whole.URL, cut.URL))
	errOut := d.failCrictl("pull", "cut")
	if !strings.Contains(errOut, "Unavailable") || !strings.Contains(errOut, "download truncated") || !strings.Contains(errOut, "past the end") {
		t.Errorf("truncated close-delimited download: %s", errOut)
	}
	storeEmpty(t, d)
	d.mustCrictl("pull", "whole")
	if got, want := fileDigest(t, d.inspecti("whole").Info.Path), fileDigest(t, guestImage(t)); got != want {
		t.Errorf("stored %s, want %s", got, want)
	}
}

// TestPullDeadlines: a server that never answers, or stops sending in the
// middle of the image, fails the pull with Unavailable after
// pull_request_timeout or pull_stall_timeout, leaving nothing.
func TestPullDeadlines(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { <-release; c.Close() }()
		}
	}()
	stalling := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(100<<20))
		w.Write(make([]byte, 1<<20))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer stalling.Close()
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_PULL_REQUEST_TIMEOUT=2s", "VMPOD_PULL_STALL_TIMEOUT=3s"}})
	d.writeTranslations("t.toml", fmt.Sprintf("[[translations]]\nname = \"silent\"\nurl = \"http://%s/d.qcow2\"\n\n[[translations]]\nname = \"stalling\"\nurl = \"%s/d.qcow2\"\n",
		silent.Addr(), stalling.URL))
	for image, want := range map[string]string{"silent": "timed out", "stalling": "pull_stall_timeout"} {
		start := time.Now()
		errOut := d.failCrictl("pull", image)
		took := time.Since(start)
		if !strings.Contains(errOut, "Unavailable") || !strings.Contains(errOut, want) {
			t.Errorf("%s: %s", image, errOut)
		}
		if took > 30*time.Second {
			t.Errorf("%s failed after %v", image, took)
		}
		t.Logf("%s failed after %.1fs", image, took.Seconds())
	}
	storeEmpty(t, d)
}

// TestCredentialsStayOutOfSight: credentials in a rule's URL (user info, a
// signed query string) and in a transport's files reach the image server
// but not vmpod's log, its metadata store or `crictl inspecti`.
func TestCredentialsStayOutOfSight(t *testing.T) {
	guest, _ := os.ReadFile(guestImage(t))
	var gotAuth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = append(gotAuth, r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.ServeContent(w, r, "g.qcow2", time.Time{}, bytes.NewReader(guest))
	}))
	defer srv.Close()
	d := startDaemon(t, daemonOpts{})
	token := filepath.Join(d.dir, "token")
	os.WriteFile(token, []byte("t0ken-s3cret\n"), 0o600)
	withUser := strings.Replace(srv.URL, "http://", "http://alice:s3cret@", 1)
	d.writeTranslations("t.toml", fmt.Sprintf(`
[[translations]]
name = "userinfo"
url = "%s/g.qcow2?X-Amz-Signature=s3cret"

[[translations]]
name = "bearer"
url = "%s/g.qcow2"
transport = "token"

[transports.token]
bearer_token_file = %q
`, withUser, srv.URL, token))
	d.mustCrictl("pull", "userinfo")
	d.mustCrictl("pull", "bearer")
	if len(gotAuth) != 2 || !strings.HasPrefix(gotAuth[0], "Basic ") || gotAuth[1] != "Bearer t0ken-s3cret" {
		t.Fatalf("the server saw Authorization %q", gotAuth)
	}
	inspect := d.mustCrictl("inspecti", "userinfo")
	meta, _ := os.ReadFile(filepath.Join(d.StateDir(), "metadata.db"))
	for what, s := range map[string]string{"crictl inspecti": inspect, "the log": d.Log(), "the metadata store": string(meta)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("%s shows a secret", what)
		}
	}
	if !strings.Contains(inspect, "redacted@") || !strings.Contains(inspect, "?redacted") {
		t.Errorf("inspecti does not show the redacted origin:\n%s", inspect)
	}
}

// allocated sums the bytes allocated to the files of dir.
func allocated(dir string) int64 {
	var n int64
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
	}
	return n
}

func maxInt(a, b int64) int64 { return max(a, b) }
