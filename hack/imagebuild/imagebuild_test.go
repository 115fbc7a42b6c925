package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestRepositoryDockerfile: the repository's Dockerfile is one this
// builder reproduces, with the layout the DaemonSet relies on.
func TestRepositoryDockerfile(t *testing.T) {
	bin := writeFile(t, t.TempDir(), "vmpod", "binary", 0o755)
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := parseRecipe(f, "../..", map[string]string{"build:/out/vmpod": bin})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Base != "debian:12" || !slices.Equal(rc.Entrypoint, []string{"/usr/local/bin/vmpod"}) || !slices.Equal(rc.Cmd, []string{"serve"}) {
		t.Errorf("FROM %s, ENTRYPOINT %q, CMD %q", rc.Base, rc.Entrypoint, rc.Cmd)
	}
	modes := map[string]os.FileMode{}
	for _, f := range rc.Files {
		modes[f.Dest] = f.Mode
	}
	for dest, mode := range map[string]os.FileMode{"/usr/local/bin/vmpod": 0o755, "/usr/local/bin/start-libvirt": 0o755,
		packagesFile: 0o644, "/etc/dpkg/dpkg.cfg.d/vmpod-slim": 0o644} {
		if modes[dest] != mode {
			t.Errorf("%s: mode %v, want %v (files %v)", dest, modes[dest], mode, modes)
		}
	}
}

// TestRefusesWhatItCannotReproduce: an instruction this builder would
// silently drop is an error naming it.
func TestRefusesWhatItCannotReproduce(t *testing.T) {
	ctx := t.TempDir()
	writeFile(t, ctx, "a", "a", 0o644)
	os.Mkdir(filepath.Join(ctx, "dir"), 0o755)
	const head = "FROM debian:12\nRUN xargs apt-get install < /usr/share/vmpod/packages\n"
	for name, tc := range map[string]struct{ dockerfile, want string }{
		"other RUN":          {head + "RUN useradd x\n", "can only reproduce the RUN"},
		"no package RUN":     {"FROM debian:12\nCOPY a /a\n", "installs no packages"},
		"ADD":                {head + "ADD a /a\n", "does not reproduce ADD"},
		"shell ENTRYPOINT":   {head + "ENTRYPOINT /bin/sh\n", "JSON form"},
		"COPY --chown":       {head + "COPY --chown=1:1 a /a\n", "--chown"},
		"COPY a directory":   {head + "COPY dir /d/\n", "not a regular file"},
		"COPY outside":       {head + "COPY ../a /a\n", "outside the build context"},
		"COPY relative dest": {head + "COPY a b\n", "not absolute"},
		"COPY --from absent": {head + "COPY --from=build /out/x /x\n", "no file given"},
		"named final stage":  {"FROM debian:12 AS final\nRUN x /usr/share/vmpod/packages\n", "no stage name"},
	} {
		_, err := parseRecipe(strings.NewReader(tc.dockerfile), ctx, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

// TestArchive: the archive is an OCI layout that names the image for
// containerd and OCI tools, holds the base and the files with their modes,
// and is the same image for the same inputs.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.tar.gz")
	writeBase(t, base)
	bin := writeFile(t, dir, "vmpod", "binary", 0o755)
	ctx := t.TempDir()
	writeFile(t, ctx, "start", "#!/bin/sh\n", 0o755)
	df := "FROM debian:12\nRUN x /usr/share/vmpod/packages\nCOPY --from=build /out/vmpod /usr/local/bin/vmpod\n" +
		"COPY start /usr/local/bin/\nENV A=1 B=\"two words\"\nLABEL x=y\nENTRYPOINT [\"/usr/local/bin/vmpod\"]\nCMD [\"serve\"]\n"
	rc, err := parseRecipe(strings.NewReader(df), ctx, map[string]string{"build:/out/vmpod": bin})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1700000000, 0)
	img, err := buildImage(rc, base, map[string]string{"org.opencontainers.image.version": "t1"}, created)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := writeArchive(img, "vmpod:t1", out); err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	untar(t, out, unpacked)
	var idx struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	b, err := os.ReadFile(filepath.Join(unpacked, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/vmpod:t1" ||
		idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "t1" {
		t.Fatalf("index.json: %s", b)
	}
	p, err := layout.FromPath(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := ii.IndexManifest()
	got, err := ii.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/vmpod"}) || !slices.Equal(cf.Config.Cmd, []string{"serve"}) ||
		!slices.Equal(cf.Config.Env, []string{defaultPath, "A=1", "B=two words"}) || cf.Config.Labels["x"] != "y" ||
		cf.Config.Labels["org.opencontainers.image.version"] != "t1" || cf.Architecture != "amd64" {
		t.Errorf("config %+v", cf.Config)
	}
	layers, _ := got.Layers()
	if len(layers) != 2 {
		t.Fatalf("%d layers, want the base and the files", len(layers))
	}
	rd, err := layers[1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]int64{}
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h.Mode
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
			t.Errorf("%s: owner %d:%d, time %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
	want := map[string]int64{"usr/": 0o755, "usr/local/": 0o755, "usr/local/bin/": 0o755, "usr/local/bin/vmpod": 0o755, "usr/local/bin/start": 0o755}
	if len(entries) != len(want) {
		t.Errorf("files layer %v, want %v", entries, want)
	}
	for n, mode := range want {
		if entries[n] != mode {
			t.Errorf("files layer: %s mode %o, want %o", n, entries[n], mode)
		}
	}
	again, err := buildImage(rc, base, map[string]string{"org.opencontainers.image.version": "t1"}, created)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := got.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("same inputs, digests %s and %s", d1, d2)
	}
}

func TestNormalize(t *testing.T) {
	for ref, want := range map[string]string{"vmpod:v1": "docker.io/library/vmpod:v1", "registry.example:5000/x/vmpod:1.2": "registry.example:5000/x/vmpod:1.2"} {
		if got, _, err := normalize(ref); err != nil || got != want {
			t.Errorf("normalize(%q) = %q, %v, want %q", ref, got, err, want)
		}
	}
	for _, ref := range []string{"vmpod", "Vmpod:1", "vmpod:bad tag"} {
		if _, _, err := normalize(ref); err == nil {
			t.Errorf("normalize(%q): no error", ref)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p
}

// writeBase writes a gzipped root file system with one file.
func writeBase(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/debian_version", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("12\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
