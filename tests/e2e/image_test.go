package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmpod/vmpod/internal/testdaemon"
)

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// guestImage returns the project's test guest if hack/test.sh built it.
func guestImage(t *testing.T) string {
	p := os.Getenv("VMPOD_TEST_GUEST")
	if p == "" {
		p = "../../tests/e2e/images/out/vmpod-test-guest.qcow2"
	}
	abs, _ := filepath.Abs(p)
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("test guest image %s missing (build it with tests/e2e/images/build-guest.sh): %v", abs, err)
	}
	return abs
}

func TestRuntimeInfo(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	out := d.mustCrictl("version")
	for _, want := range []string{"RuntimeName:  vmpod", "RuntimeApiVersion:  v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("crictl version lacks %q:\n%s", want, out)
		}
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type   string
				Status bool
				Reason string
			}
		}
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("info")), &info); err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, c := range info.Status.Conditions {
		ready[c.Type] = c.Status
	}
	if !ready["RuntimeReady"] || !ready["NetworkReady"] {
		t.Errorf("conditions = %+v, want RuntimeReady and NetworkReady true (libvirtd is running)", info.Status.Conditions)
	}
	if out := d.mustCrictl("runtime-config"); !strings.Contains(out, "CGROUPFS") {
		t.Errorf("runtime-config = %q, want the cgroupfs driver", out)
	}
	// A checkpoint of a container that does not exist says so.
	if errOut := d.failCrictl("checkpoint", "--export", filepath.Join(t.TempDir(), "c.tar"), "0123456789ab"); !strings.Contains(errOut, "NotFound") || !strings.Contains(errOut, "0123456789ab") {
		t.Errorf("crictl checkpoint error = %q", errOut)
	}
}

func TestRuntimeNotReadyWithoutLibvirt(t *testing.T) {
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_LIBVIRT_URI=qemu+unix:///system?socket=/nonexistent/libvirt-sock"}})
	out := d.mustCrictl("info")
	if !strings.Contains(out, "LibvirtUnavailable") {
		t.Fatalf("crictl info with libvirt unreachable lacks the reason:\n%s", out)
	}
}

func TestImageLifecycle(t *testing.T) {
	guest := guestImage(t)
	srv := newFileServer(t)
	run(t, "cp", guest, srv.path("guest.qcow2"))
	run(t, "qemu-img", "create", "-q", "-f", "raw", srv.path("blank.raw"), "1M")
	d := startDaemon(t, daemonOpts{})
	d.writeTranslations("10-test.toml", fmt.Sprintf(`
[[translations]]
name = "test-guest"
url = "%[1]s/guest.qcow2"

[[translations]]
regexp = '^local/(.+)$'
url = "%[1]s/$1"
`, srv.URL))
	id := fileDigest(t, guest)

	out := d.mustCrictl("pull", "test-guest")
	if !strings.Contains(out, id) {
		t.Fatalf("pull printed %q, want image ID %s", out, id)
	}
	d.mustCrictl("pull", "test-guest:v1")
	d.mustCrictl("pull", "local/guest.qcow2")
	d.mustCrictl("pull", "local/blank.raw")

	images := d.mustCrictl("images", "--digests")
	for _, want := range []string{"test-guest", "local/guest.qcow2", "v1", "latest", "local/blank.raw", id[7:20]} {
		if !strings.Contains(images, want) {
			t.Errorf("crictl images lacks %q:\n%s", want, images)
		}
	}
	var st struct {
		Status struct {
			ID          string
			RepoTags    []string
			RepoDigests []string
			Size        string
		}
		Info struct {
			Format string
			Path   string
		}
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("inspecti", "test-guest")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Status.ID != id || len(st.Status.RepoTags) != 3 || len(st.Status.RepoDigests) != 2 || st.Info.Format != "qcow2" {
		t.Fatalf("inspecti = %+v", st)
	}
	if got := fileDigest(t, st.Info.Path); got != id {
		t.Fatalf("stored file digest %s, want %s", got, id)
	}
	// The image ID names it too.
	d.mustCrictl("inspecti", id)

	var fsinfo struct {
		Status struct {
			ImageFilesystems []struct {
				UsedBytes  struct{ Value string }
				InodesUsed struct{ Value string }
				FsID       struct{ Mountpoint string } `json:"fsId"`
			}
		}
	}
	if err := json.Unmarshal([]byte(d.mustCrictl("imagefsinfo")), &fsinfo); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(guest)
	ifs := fsinfo.Status.ImageFilesystems
	if len(ifs) != 1 || !strings.HasPrefix(ifs[0].FsID.Mountpoint, d.StateDir()) {
		t.Fatalf("imagefsinfo = %+v", fsinfo)
	}
	var used, inodes int64
	fmt.Sscan(ifs[0].UsedBytes.Value, &used)
	fmt.Sscan(ifs[0].InodesUsed.Value, &inodes)
	// The guest plus a 1 MiB raw file, and far less than a whole disk.
	if used < fi.Size() || used > fi.Size()+64<<20 || inodes < 4 || inodes > 100 {
		t.Fatalf("imagefsinfo used %d bytes / %d inodes; the guest alone is %d bytes", used, inodes, fi.Size())
	}

	// Removing by one name removes every name of the digest and the file.
	d.mustCrictl("rmi", "test-guest:v1")
	images = d.mustCrictl("images")
	if strings.Contains(images, "test-guest") || strings.Contains(images, "guest.qcow2") {
		t.Fatalf("names survived rmi:\n%s", images)
	}
	if _, err := os.Stat(st.Info.Path); !os.IsNotExist(err) {
		t.Fatalf("image file survived rmi: %v", err)
	}
	// Idempotent at the RPC level: crictl rmi of a missing image reports
	// "no such image" itself, but removing by ID twice must not error.
	rawID := strings.TrimSpace(d.mustCrictl("images", "-q", "local/blank.raw"))
	d.mustCrictl("rmi", rawID)
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("images left: %q", out)
	}

	// Restart keeps the store consistent.
	d.mustCrictl("pull", "test-guest")
	d.mustStop()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != id {
		t.Fatalf("after restart images = %q, want %s", out, id)
	}
}

func TestPullErrors(t *testing.T) {
	srv := newFileServer(t)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", srv.path("base.qcow2"), "16M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", srv.path("backed.qcow2"))
	if err := os.WriteFile(srv.path("notes.txt"), []byte("this is not a disk image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonOpts{})
	d.writeTranslations("test.yaml", fmt.Sprintf(`
translations:
  - regexp: '^local/(.+)$'
    url: "%s/$1"
`, srv.URL))
	wrong := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, image string
		want        []string
	}{
		{"untranslated", "nowhere/image", []string{"InvalidArgument", "no image translation rule matches", d.translations}},
		{"404", "local/missing.qcow2", []string{"NotFound", "404"}},
		{"backing file", "local/backed.qcow2", []string{"InvalidArgument", "backing file"}},
		{"not an image", "local/notes.txt", []string{"InvalidArgument", "not a disk image"}},
		{"digest mismatch", "local/base.qcow2@" + wrong, []string{"InvalidArgument", "digest mismatch"}},
		{"bad digest", "local/base.qcow2@sha256:beef", []string{"InvalidArgument", "sha256:<64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errOut := d.failCrictl("pull", tc.image)
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
	if out := d.mustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("failed pulls stored images: %q", out)
	}
	for _, sub := range []string{"images/tmp", "images/sha256"} {
		es, err := os.ReadDir(filepath.Join(d.StateDir(), sub))
		if err != nil || len(es) != 0 {
			t.Fatalf("%s not empty after failed pulls: %v %v", sub, es, err)
		}
	}
	// A correct digest pins the image; pulling it again downloads nothing.
	id := fileDigest(t, srv.path("base.qcow2"))
	d.mustCrictl("pull", "local/base.qcow2@"+id)
	before := srv.count("/base.qcow2")
	d.mustCrictl("pull", "local/base.qcow2@"+id)
	if after := srv.count("/base.qcow2"); after != before {
		t.Fatalf("pull of a present digest fetched again (%d -> %d)", before, after)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	srv := newFileServer(t)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", srv.path("shared.qcow2"), "64M")
	srv.delay.Store(int64(time.Second)) // both pulls are in flight together
	d := startDaemon(t, daemonOpts{})
	d.writeTranslations("t.toml", fmt.Sprintf("[[translations]]\nname = \"shared\"\nurl = \"%s/shared.qcow2\"\n", srv.URL))
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errOut, err := d.crictl("pull", "shared")
			if err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, errOut)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.count("/shared.qcow2"); n != 1 {
		t.Fatalf("3 concurrent pulls made %d downloads, want 1", n)
	}
}

func TestShutdownCancelsPullCleanly(t *testing.T) {
	srv := newFileServer(t)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", srv.path("slow.qcow2"), "16M")
	srv.delay.Store(int64(20 * time.Second))
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_SHUTDOWN_TIMEOUT=1s"}})
	d.writeTranslations("t.toml", fmt.Sprintf("[[translations]]\nname = \"slow\"\nurl = \"%s/slow.qcow2\"\n", srv.URL))
	done := make(chan error, 1)
	go func() { _, _, err := d.crictl("pull", "slow"); done <- err }()
	for srv.count("/slow.qcow2") == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	d.mustStop()
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("shutdown took %v with a 1s shutdown_timeout", took)
	}
	if err := <-done; err == nil {
		t.Fatal("pull succeeded although the daemon stopped")
	}
	es, _ := os.ReadDir(filepath.Join(d.StateDir(), "images", "tmp"))
	blobs, _ := os.ReadDir(filepath.Join(d.StateDir(), "images", "sha256"))
	if len(es) != 0 || len(blobs) != 0 {
		t.Fatalf("interrupted pull left tmp %v, blobs %v", es, blobs)
	}
	if !strings.Contains(d.Log(), "vmpod stopped") {
		t.Fatalf("no clean stop in the log:\n%s", d.Log())
	}
}

func TestSingleInstanceAndStaleSocket(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	// Same state dir, other socket: refused.
	other := filepath.Join(t.TempDir(), "other.sock")
	out, err := runDaemonBriefly(t, other, d.StateDir())
	if err == nil || !strings.Contains(out, "state directory "+d.StateDir()+" is in use by vmpod pid") {
		t.Fatalf("second daemon on the same state dir: err %v, output:\n%s", err, out)
	}
	// Same socket, other state dir: refused.
	out, err = runDaemonBriefly(t, d.Socket(), t.TempDir())
	if err == nil || !strings.Contains(out, "socket "+d.Socket()+" is in use") {
		t.Fatalf("second daemon on the same socket: err %v, output:\n%s", err, out)
	}
	d.mustCrictl("version") // the first one is unharmed

	// kill -9 leaves the socket file; the next start replaces it.
	d.Kill()
	if _, err := os.Stat(d.Socket()); err != nil {
		t.Fatalf("expected a stale socket after kill -9: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(d.Socket())
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode = %v, %v; want 0660", st.Mode(), err)
	}
}

// runDaemonBriefly starts a second vmpod that is expected to refuse to run
// and returns its output.
func runDaemonBriefly(t *testing.T, socket, stateDir string) (string, error) {
	d := testdaemon.New(testdaemon.Options{Bin: vmpodBin, Dir: t.TempDir(), Socket: socket, StateDir: stateDir, StartTimeout: 20 * time.Second})
	err := d.Start()
	d.Stop()
	return d.Log(), err
}
