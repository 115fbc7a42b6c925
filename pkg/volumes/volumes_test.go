package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func mounts(ms ...*runtimeapi.Mount) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Mounts: ms}
}

// TestFileCapReadsNoMore: a huge hostPath file is refused by the 4 MiB
// cap without being read whole into vmpod's memory (here: a 1 TiB sparse
// file, which a whole read would never finish).
func TestFileCapReadsNoMore(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 40); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	_, err = Resolve(mounts(&runtimeapi.Mount{ContainerPath: "/etc/big", HostPath: big}), Options{ShareType: "virtiofs"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "add up to more than") {
		t.Fatalf("1 TiB file: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusing the file took %v: it was read", d)
	}

	// Files that fit are delivered, and their sizes add up against the cap.
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("hello"), 0o640)
	p, err := Resolve(mounts(&runtimeapi.Mount{ContainerPath: "/etc/small", HostPath: small}), Options{ShareType: "virtiofs"})
	if err != nil || len(p.Files) != 1 || string(p.Files[0].Content) != "hello" || p.Files[0].Mode != 0o640 {
		t.Fatalf("small file: %+v, %v", p.Files, err)
	}
	three := filepath.Join(dir, "three")
	os.WriteFile(three, make([]byte, 3<<20), 0o644)
	_, err = Resolve(mounts(&runtimeapi.Mount{ContainerPath: "/a", HostPath: three}, &runtimeapi.Mount{ContainerPath: "/b", HostPath: three}), Options{ShareType: "virtiofs"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("two 3 MiB files: %v", err)
	}
}

// TestFIFORefused: a FIFO (which a reader would block on) is refused at
// once, even when it stands where a regular file was.
func TestFIFORefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCapped(fifo, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("FIFO: %v", err)
	}
}

// TestReadOnlyShares: a read-only virtiofs share gets the virtiofsd that
// cannot write (or is refused without it); 9p enforces read-only itself.
func TestReadOnlyShares(t *testing.T) {
	dir := t.TempDir()
	m := mounts(&runtimeapi.Mount{ContainerPath: "/mnt/ro", HostPath: dir, Readonly: true},
		&runtimeapi.Mount{ContainerPath: "/mnt/rw", HostPath: dir})
	p, err := Resolve(m, Options{ShareType: "virtiofs", ReadOnlyVirtiofsd: "/var/lib/vmpod/bin/vmpod-virtiofsd-ro"})
	if err != nil {
		t.Fatal(err)
	}
	if fs := p.Filesystems; len(fs) != 2 || fs[0].Binary != "/var/lib/vmpod/bin/vmpod-virtiofsd-ro" || !fs[0].ReadOnly || fs[1].Binary != "" || fs[1].ReadOnly {
		t.Fatalf("filesystems %+v", fs)
	}
	if _, err := Resolve(m, Options{ShareType: "virtiofs"}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "/mnt/ro") {
		t.Fatalf("read-only virtiofs without its virtiofsd: %v", err)
	}
	p, err = Resolve(m, Options{ShareType: "9p"})
	if err != nil || !p.Filesystems[0].ReadOnly || p.Filesystems[0].Binary != "" {
		t.Fatalf("9p: %+v, %v", p.Filesystems, err)
	}
}

// TestSymlinkedShare: a host path that is a symlink to a directory is
// shared as the directory it names (virtiofsd refuses a symlink, and the
// VM would not start: critest's "host path is a symlink").
func TestSymlinkedShare(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	p, err := Resolve(mounts(&runtimeapi.Mount{ContainerPath: link, HostPath: link}), Options{ShareType: "virtiofs"})
	if err != nil {
		t.Fatal(err)
	}
	if fs := p.Filesystems; len(fs) != 1 || fs[0].Source != target || p.Shares[0].MountPath != link {
		t.Fatalf("filesystems %+v, shares %+v", fs, p.Shares)
	}
}
