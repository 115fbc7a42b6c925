package oci

import (
	"bytes"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestRealRegistry pushes a containerDisk with the scripts in
// tests/e2e/registry to a real docker-registry (Debian's docker-registry
// package) on 127.0.0.1, with and without basic auth, and pulls it back.
// It needs docker-registry, skopeo, curl, qemu-img and bcrypt (htpasswd or
// Python's crypt), and runs only with VMPOD_REGISTRY_TEST=1.
func TestRealRegistry(t *testing.T) {
	if os.Getenv("VMPOD_REGISTRY_TEST") != "1" {
		t.Skip("set VMPOD_REGISTRY_TEST=1 to run against a real docker-registry")
	}
	scripts, err := filepath.Abs("../../../tests/e2e/registry")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	// A real qcow2 with random content.
	raw := filepath.Join(work, "raw.img")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(work, "e2e-disk.qcow2")
	run(t, "", "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk)
	want, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}

	start := func(t *testing.T, htpasswd string) string {
		port := freePort(t)
		dir := filepath.Join(t.TempDir(), "registry")
		args := []string{strconv.Itoa(port)}
		if htpasswd != "" {
			args = append(args, htpasswd)
		}
		cmd := exec.Command(filepath.Join(scripts, "start-registry.sh"), args...)
		cmd.Env = append(os.Environ(), "REGISTRY_DIR="+dir)
		cmd.Stderr = os.Stderr
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("start-registry.sh: %v", err)
		} else if got := strings.TrimSpace(string(out)); got != dir {
			t.Errorf("start-registry.sh printed %q, want %q", got, dir)
		}
		t.Cleanup(func() { run(t, "", filepath.Join(scripts, "stop-registry.sh"), dir) })
		return "127.0.0.1:" + strconv.Itoa(port)
	}

	t.Run("anonymous", func(t *testing.T) {
		host := start(t, "")
		for _, compress := range []string{"gzip", "none"} {
			ref := host + "/vms/e2e:" + compress
			digest := strings.TrimSpace(run(t, "COMPRESS="+compress, filepath.Join(scripts, "push-containerdisk.sh"), disk, ref))
			opts := testOptions(t, "", host)
			res, err := Pull(ctxTimeout(t), ref, nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(res.TmpFile)
			if !bytes.Equal(got, want) || res.DiskDigest != sha256Digest(want) || res.DiskPath != "/disk/e2e-disk.qcow2" {
				t.Errorf("pulled %s (%s, %d bytes), want /disk/e2e-disk.qcow2 with the pushed bytes", res.DiskPath, res.DiskDigest, len(got))
			}
			if res.ManifestDigest != digest || res.RepoDigest != host+"/vms/e2e@"+digest {
				t.Errorf("ManifestDigest, RepoDigest = %s, %s; the push reported %s", res.ManifestDigest, res.RepoDigest, digest)
			}
			id, err := Resolve(ctxTimeout(t), ref, nil, opts)
			if err != nil || id != res.Identity {
				t.Errorf("Resolve = %+v, %v; want %+v", id, err, res.Identity)
			}
		}
		_, err := Pull(ctxTimeout(t), host+"/vms/e2e:nope", nil, testOptions(t, "", host))
		if !errdefs.IsNotFound(err) {
			t.Errorf("missing tag: err = %v, want NotFound", err)
		}
	})

	t.Run("htpasswd", func(t *testing.T) {
		htpasswd := filepath.Join(t.TempDir(), "htpasswd")
		run(t, "", filepath.Join(scripts, "make-htpasswd.sh"), htpasswd, "vmpod", "e2e-pass")
		host := start(t, htpasswd)
		ref := host + "/private/e2e:1"
		if _, err := runErr("", filepath.Join(scripts, "push-containerdisk.sh"), disk, ref); err == nil {
			t.Error("push without credentials succeeded")
		}
		run(t, "", filepath.Join(scripts, "push-containerdisk.sh"), disk, ref, "vmpod:e2e-pass")

		opts := testOptions(t, "", host)
		res, err := Pull(ctxTimeout(t), ref, &Auth{Username: "vmpod", Password: "e2e-pass"}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.DiskDigest != sha256Digest(want) {
			t.Errorf("DiskDigest = %s, want %s", res.DiskDigest, sha256Digest(want))
		}
		for _, auth := range []*Auth{nil, {Username: "vmpod", Password: "wrong"}} {
			opts := testOptions(t, "", host)
			_, err := Pull(ctxTimeout(t), ref, auth, opts)
			t.Log(err)
			if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "authentication") {
				t.Errorf("auth %v: err = %v, want Unauthenticated", auth, err)
			}
			checkNoTempFiles(t, opts)
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run runs a command (with env, "K=V" or "", added) and returns its
// stdout; a failure fails the test.
func run(t *testing.T, env string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErr(env string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if env != "" {
		cmd.Env = append(os.Environ(), env)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &cmdError{err: err, stderr: stderr.String()}
	}
	return string(out), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }
