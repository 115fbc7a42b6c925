package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// defaultPath is debian:12's PATH, which the Dockerfile's image inherits.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildImage assembles the image: the base layer (a gzipped root file
// system tar), one layer with the recipe's files, and the recipe's
// configuration. Timestamps are created, so the same inputs give the same
// digests.
func buildImage(rc *recipe, baseLayer string, labels map[string]string, created time.Time) (v1.Image, error) {
	base, err := tarball.LayerFromFile(baseLayer, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("base layer %s: %w", baseLayer, err)
	}
	filesTar, err := filesLayer(rc.Files, created)
	if err != nil {
		return nil, err
	}
	files, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(filesTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("hack/build-image.sh: %s with the packages of %s (mmdebstrap)", rc.Base, packagesFile)}},
		mutate.Addendum{Layer: files, History: v1.History{Created: v1.Time{Time: created},
			CreatedBy: "hack/build-image.sh: COPY " + strings.Join(dests(rc.Files), " ")}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", "amd64", v1.Time{Time: created}
	cf.Config.Entrypoint, cf.Config.Cmd = rc.Entrypoint, rc.Cmd
	cf.Config.WorkingDir, cf.Config.User = rc.WorkingDir, rc.User
	cf.Config.Env = []string{defaultPath}
	for _, kv := range rc.Env {
		k, v, _ := strings.Cut(kv, "=")
		cf.Config.Env = setEnv(cf.Config.Env, k, v)
	}
	cf.Config.Labels = map[string]string{}
	for k, v := range rc.Labels {
		cf.Config.Labels[k] = v
	}
	for k, v := range labels {
		cf.Config.Labels[k] = v
	}
	return mutate.ConfigFile(img, cf)
}

func dests(fs []file) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Dest)
	}
	return out
}

// filesLayer is an uncompressed layer tar with the files and their parent
// directories (0755, as COPY makes them), owned by root.
func filesLayer(fs []file, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range fs {
		for d := path.Dir(f.Dest); d != "/"; d = path.Dir(d) {
			dirs[strings.TrimPrefix(d, "/")+"/"] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, f := range fs {
		b, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Dest, "/"), Mode: int64(f.Mode), Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// normalize turns a reference such as vmpod:v1 into the full name
// containerd and the kubelet use (docker.io/library/vmpod:v1) and returns
// it with its tag. The reference must carry a tag.
func normalize(ref string) (name, tag string, err error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	t, ok := n.(reference.NamedTagged)
	if !ok {
		return "", "", fmt.Errorf("image reference %q has no tag (want e.g. vmpod:v0.1.0)", ref)
	}
	return t.String(), t.Tag(), nil
}

// writeArchive writes img as an OCI image layout in a tar file (an "OCI
// archive"): index.json names it for containerd (io.containerd.image.name,
// which `ctr images import` uses) and for OCI tools (the tag in
// org.opencontainers.image.ref.name, which skopeo and podman read).
func writeArchive(img v1.Image, ref, out string) error {
	name, tag, err := normalize(ref)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".imagebuild-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("write the OCI layout: %w", err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
