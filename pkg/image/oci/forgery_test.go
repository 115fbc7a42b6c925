package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
)

// rawManifest is a manifest pushed as bytes, whatever it says.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }
func (m rawManifest) MediaType() (ggcrtypes.MediaType, error) {
	return ggcrtypes.OCIManifestSchema1, nil
}

// pushForged pushes, as repoTag, an OCI manifest whose config is the blob
// config (any bytes) and whose layers are layers: what a hostile registry
// (or a tenant with push access to one) can serve. It returns the name.
func (r *testRegistry) pushForged(repoTag string, config []byte, layers ...v1.Layer) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	cfgLayer := static.NewLayer(config, ggcrtypes.OCIConfigJSON)
	if err := remote.WriteLayer(ref.Context(), cfgLayer, r.remoteOpts()...); err != nil {
		r.t.Fatal(err)
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: string(ggcrtypes.OCIManifestSchema1),
		Config: desc{string(ggcrtypes.OCIConfigJSON), sha256Digest(config), int64(len(config))}}
	for _, l := range layers {
		if err := remote.WriteLayer(ref.Context(), l, r.remoteOpts()...); err != nil {
			r.t.Fatal(err)
		}
		d, _ := l.Digest()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		m.Layers = append(m.Layers, desc{string(mt), d.String(), size})
	}
	b, err := json.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest(b), r.remoteOpts()...); err != nil {
		r.t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// TestPullRefusesForgedConfig: the config digest is the image ID, so a
// manifest that names another image's config (or a disk file, or
// anything) as its config with the attacker's layers must not pull. On
// the old code these pulls succeeded and reported the victim's ID.
func TestPullRefusesForgedConfig(t *testing.T) {
	reg := newTestRegistry(t)
	real, _ := randomDisk(t, 8192)
	evil, _ := randomDisk(t, 8192)
	realImg := buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/real.qcow2", real)))
	reg.push(realImg, "public/real:1")
	realCfg, err := realImg.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	evilLayer := layer(t, gzipped, false, fileEntry("disk/evil.qcow2", evil))
	evilDiff, _ := evilLayer.DiffID()
	for i, tc := range []struct {
		name   string
		config []byte
		want   string
	}{
		{"another image's config", realCfg, "diff_id"},
		{"a disk image as config", real, "not an image config"},
		{"two documents", []byte(`{"rootfs":{"type":"layers","diff_ids":["` + evilDiff.String() + `"]}} {}`), "not an image config"},
		{"no rootfs", []byte(`{"architecture":"amd64"}`), "rootfs"},
		{"layer count", []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`), "lists 0 layers"},
		{"bad diff_id", []byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:xyz"]}}`), "diff_id 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.pushForged(fmt.Sprintf("evil/x:%d", i), tc.config, evilLayer)
			opts := testOptions(t, "", reg.host)
			res, err := Pull(ctxTimeout(t), ref, nil, opts)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull = %s, %v; want InvalidArgument mentioning %q", res.ConfigDigest, err, tc.want)
			}
			checkNoTempFiles(t, opts)
		})
	}
	// The honest image still pulls, and its ID is its config's digest.
	opts := testOptions(t, "", reg.host)
	res, err := Pull(ctxTimeout(t), reg.host+"/public/real:1", nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, res, opts, realImg, "/disk/real.qcow2", real)
}

// TestPullChecksEveryLayerRead: diff_ids are checked for the layers above
// the disk too (their whiteouts decide what the disk is).
func TestPullChecksEveryLayerRead(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 4096)
	lower := layer(t, gzipped, false, fileEntry("disk/d.qcow2", disk))
	upper := layer(t, gzipped, false, fileEntry("etc/motd", []byte("hello")))
	honest := buildImage(t, false, "amd64", lower, upper)
	cfg, _ := honest.RawConfigFile()
	// Same config, but the upper layer swapped for one that hides nothing
	// the same way.
	other := layer(t, gzipped, false, fileEntry("etc/motd", []byte("hi")))
	ref := reg.pushForged("evil/upper:1", cfg, lower, other)
	_, err := Pull(ctxTimeout(t), ref, nil, testOptions(t, "", reg.host))
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "layer 2") || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("err = %v, want the upper layer's diff_id mismatch", err)
	}
}
