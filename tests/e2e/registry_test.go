package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// registry is Debian's docker-registry started by tests/e2e/registry.
type registry struct {
	addr string
	dir  string
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

// startRegistry starts a registry on 127.0.0.1, with basic auth for
// user:password when user is not empty.
func startRegistry(t *testing.T, user, password string) *registry {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	args := []string{fmt.Sprint(port)}
	if user != "" {
		ht := filepath.Join(dir, "htpasswd")
		run(t, "registry/make-htpasswd.sh", ht, user, password)
		args = append(args, ht)
	}
	cmd := exec.Command("registry/start-registry.sh", args...)
	cmd.Env = append(os.Environ(), "REGISTRY_DIR="+filepath.Join(dir, "reg"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start registry: %v\n%s", err, out)
	}
	r := &registry{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: filepath.Join(dir, "reg")}
	t.Cleanup(func() { exec.Command("registry/stop-registry.sh", r.dir, "--purge").Run() })
	return r
}

// push packs a disk image as a containerDisk and pushes it; it returns the
// manifest digest.
func (r *registry) push(t *testing.T, disk, repoTag, creds string, env ...string) string {
	t.Helper()
	args := []string{disk, r.addr + "/" + repoTag}
	if creds != "" {
		args = append(args, creds)
	}
	cmd := exec.Command("registry/push-containerdisk.sh", args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return strings.TrimSpace(string(out))
}

// registriesConf writes a registries.conf that lets vmpod use the plain-
// HTTP test registries.
func registriesConf(t *testing.T, regs ...*registry) string {
	t.Helper()
	var b strings.Builder
	for _, r := range regs {
		fmt.Fprintf(&b, "[[registry]]\nlocation = %q\ninsecure = true\n\n", r.addr)
	}
	p := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestContainerDiskFromRegistry(t *testing.T) {
	guest := guestImage(t)
	reg := startRegistry(t, "", "")
	digest := reg.push(t, guest, "vms/guest:v1", "")
	// An image whose file is not under /disk/.
	reg.push(t, guest, "vms/not-a-disk:v1", "", "DISK_DIR=opt")
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_REGISTRIES_CONF=" + registriesConf(t, reg)}})
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	t.Cleanup(e.cleanupAll)

	ref := reg.addr + "/vms/guest:v1"
	id := strings.TrimPrefix(strings.TrimSpace(d.mustCrictl("pull", ref)), "Image is up to date for ")
	if !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("pull printed %q", id)
	}
	// By digest: pins the same image; nothing new is stored.
	d.mustCrictl("pull", reg.addr+"/vms/guest@"+digest)
	images := d.mustCrictl("images", "--digests")
	if !strings.Contains(images, reg.addr+"/vms/guest") || !strings.Contains(images, "v1") || !strings.Contains(images, digest[7:20]) {
		t.Fatalf("crictl images --digests:\n%s", images)
	}
	if n := len(strings.Fields(d.mustCrictl("images", "-q"))); n != 1 {
		t.Fatalf("%d images after pulls by tag and digest, want 1", n)
	}
	blobs, _ := os.ReadDir(filepath.Join(d.StateDir(), "images", "sha256"))
	if len(blobs) != 1 || "sha256:"+blobs[0].Name() != fileDigest(t, guest) {
		t.Fatalf("stored disk files %v, want the guest's digest", blobs)
	}

	// It boots as a VM pod.
	f := e.podConfigs("oci", 0, nil)
	ctr := map[string]any{
		"metadata": map[string]any{"name": "vm"},
		"image":    map[string]any{"image": ref},
		"log_path": "vm/0.log",
	}
	f.ctr = e.writeJSON("oci-ctr.json", ctr)
	podID, _ := e.startVM(f)
	waitLog(t, f.logPath, readyRE, bootTimeout)
	e.mustCrictl("stopp", podID)
	e.mustCrictl("rmp", podID)

	// Errors: missing tag, no /disk/ file.
	if errOut := d.failCrictl("pull", reg.addr+"/vms/guest:nope"); !strings.Contains(errOut, "NotFound") {
		t.Errorf("missing tag: %s", errOut)
	}
	if errOut := d.failCrictl("pull", reg.addr+"/vms/not-a-disk:v1"); !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, "/disk/") {
		t.Errorf("image without a /disk/ file: %s", errOut)
	}
	d.mustCrictl("rmi", ref)
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("images left: %q", out)
	}
	if blobs, _ := os.ReadDir(filepath.Join(d.StateDir(), "images", "sha256")); len(blobs) != 0 {
		t.Fatalf("disk files left: %v", blobs)
	}
}

func TestContainerDiskWithCredentials(t *testing.T) {
	guest := guestImage(t)
	reg := startRegistry(t, "vmuser", "s3cret")
	reg.push(t, guest, "private/guest:1", "vmuser:s3cret")
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_REGISTRIES_CONF=" + registriesConf(t, reg)}})
	ref := reg.addr + "/private/guest:1"

	errOut := d.failCrictl("pull", "--creds", "vmuser:wrong", ref)
	if !strings.Contains(strings.ToLower(errOut), "auth") {
		t.Errorf("wrong credentials: %s", errOut)
	}
	if errOut := d.failCrictl("pull", ref); !strings.Contains(strings.ToLower(errOut), "auth") {
		t.Errorf("no credentials: %s", errOut)
	}
	d.mustCrictl("pull", "--creds", "vmuser:s3cret", ref)
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) == "" {
		t.Fatal("no image after an authenticated pull")
	}
	// Credentials never reach the log or the metadata store.
	if strings.Contains(d.Log(), "s3cret") {
		t.Error("the password is in vmpod's log")
	}
	if b, _ := os.ReadFile(filepath.Join(d.StateDir(), "metadata.db")); strings.Contains(string(b), "s3cret") {
		t.Error("the password is in the metadata store")
	}
}
