package oci

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestPullRegistryConfiguration(t *testing.T) {
	reg := newTestRegistry(t)
	disk, _ := randomDisk(t, 2000)
	img := buildImage(t, false, "amd64", layer(t, gzipped, false, fileEntry("disk/d.qcow2", disk)))
	ref := reg.push(img, "vms/debian:12")

	t.Run("plain HTTP without insecure", func(t *testing.T) {
		opts := testOptions(t, "")
		_, err := Pull(ctxTimeout(t), ref, nil, opts)
		t.Log(err)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "insecure = true") {
			t.Errorf("err = %v, want FailedPrecondition suggesting insecure = true", err)
		}
	})
	t.Run("blocked", func(t *testing.T) {
		opts := testOptions(t, fmt.Sprintf("[[registry]]\nlocation = %q\nblocked = true\n", reg.host+"/vms"))
		_, err := Pull(ctxTimeout(t), ref, nil, opts)
		t.Log(err)
		if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "blocked") {
			t.Errorf("err = %v, want PermissionDenied saying blocked", err)
		}
		if _, err := Resolve(ctxTimeout(t), ref, nil, opts); !errdefs.IsPermissionDenied(err) {
			t.Errorf("Resolve: err = %v, want PermissionDenied", err)
		}
	})
	t.Run("mirror", func(t *testing.T) {
		// registry.invalid does not exist; its mirror serves the image.
		opts := testOptions(t, fmt.Sprintf("[[registry]]\nlocation = \"registry.invalid\"\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", reg.host))
		res, err := Pull(ctxTimeout(t), "registry.invalid/vms/debian:12", nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, res, opts, img, "/disk/d.qcow2", disk)
		if res.Name != "registry.invalid/vms/debian:12" || res.RepoTag != res.Name {
			t.Errorf("Name, RepoTag = %q, %q, want the logical name", res.Name, res.RepoTag)
		}
	})
	t.Run("short name with one search registry", func(t *testing.T) {
		opts := testOptions(t, fmt.Sprintf("unqualified-search-registries = [%q]", reg.host), reg.host)
		res, err := Pull(ctxTimeout(t), "vms/debian:12", nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, res, opts, img, "/disk/d.qcow2", disk)
		if res.Name != ref {
			t.Errorf("Name = %q, want %q", res.Name, ref)
		}
	})
	t.Run("short name alias", func(t *testing.T) {
		opts := testOptions(t, fmt.Sprintf("[aliases]\n\"debian\" = %q\n", reg.host+"/vms/debian"), reg.host)
		res, err := Pull(ctxTimeout(t), "debian:12", nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, res, opts, img, "/disk/d.qcow2", disk)
	})
	t.Run("short name tried in order when permissive", func(t *testing.T) {
		// 127.0.0.1:1 refuses connections; the second registry has the image.
		opts := testOptions(t, fmt.Sprintf("unqualified-search-registries = [\"127.0.0.1:1\", %q]\nshort-name-mode = \"permissive\"", reg.host), reg.host)
		res, err := Pull(ctxTimeout(t), "vms/debian:12", nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, res, opts, img, "/disk/d.qcow2", disk)
	})
	t.Run("ambiguous short name when enforcing", func(t *testing.T) {
		opts := testOptions(t, fmt.Sprintf("unqualified-search-registries = [\"quay.invalid\", %q]\nshort-name-mode = \"enforcing\"", reg.host), reg.host)
		_, err := Pull(ctxTimeout(t), "vms/debian:12", nil, opts)
		t.Log(err)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), "quay.invalid/vms/debian:12") {
			t.Errorf("err = %v, want InvalidArgument naming the candidates", err)
		}
	})
	t.Run("short name without search registries", func(t *testing.T) {
		opts := testOptions(t, "", reg.host)
		_, err := Pull(ctxTimeout(t), "vms/debian:12", nil, opts)
		t.Log(err)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "fully-qualified") {
			t.Errorf("err = %v, want InvalidArgument asking for a fully-qualified name", err)
		}
	})
	t.Run("short name not found anywhere", func(t *testing.T) {
		opts := testOptions(t, fmt.Sprintf("unqualified-search-registries = [%q, %q]", reg.host, reg.host), reg.host)
		_, err := Pull(ctxTimeout(t), "vms/nothere:1", nil, opts)
		t.Log(err)
		if !errdefs.IsNotFound(err) {
			t.Errorf("err = %v, want NotFound", err)
		}
	})
	t.Run("missing registries.conf", func(t *testing.T) {
		opts := testOptions(t, "", reg.host)
		opts.RegistriesConf = opts.TmpDir + "/no-such.conf"
		// Fully-qualified names still work (over HTTPS, so this one fails
		// on TLS, not on the configuration).
		_, err := Pull(ctxTimeout(t), ref, nil, opts)
		t.Log(err)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "plain HTTP") {
			t.Errorf("err = %v, want the plain-HTTP hint", err)
		}
	})
	t.Run("invalid name", func(t *testing.T) {
		for _, name := range []string{"", "UPPER/case", "a b", "sha256:" + strings.Repeat("0", 64)} {
			if _, err := Pull(ctxTimeout(t), name, nil, testOptions(t, "")); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Pull(%q) = %v, want InvalidArgument", name, err)
			}
		}
	})
}

func TestPullUnreachable(t *testing.T) {
	opts := testOptions(t, "", "127.0.0.1:1")
	_, err := Pull(ctxTimeout(t), "127.0.0.1:1/vms/debian:12", nil, opts)
	t.Log(err)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v, want Unavailable", err)
	}
	checkNoTempFiles(t, opts)
}
