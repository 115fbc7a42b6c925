package lifecycle_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// mode returns path's permission bits and group.
func mode(t *testing.T, path string) (fs.FileMode, int) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm(), int(st.Sys().(*syscall.Stat_t).Gid)
}

// TestVMFilesArePrivate: the files of a VM (the seed carries env, Secret
// files, tokens and keys) are root's alone, in directories only QEMU's
// group may search; a vmpod restart tightens what an older vmpod left.
func TestVMFilesArePrivate(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	// "QEMU" runs with a group of its own; without root, the test's own
	// (the only group it may give a file to).
	qemuGID := os.Getgid()
	if os.Getuid() == 0 {
		qemuGID = 64055
	}
	e.LV.SetQEMUOwner(libvirttools.Owner{UID: os.Getuid(), GID: qemuGID})
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	rec := e.Record(t, id)
	check := func() {
		t.Helper()
		for _, c := range []struct {
			path string
			want fs.FileMode
		}{
			{e.Pods.ContainersDir(), 0o710}, {rec.Dir, 0o710}, {rec.RunDir, 0o700},
			{rec.RootDisk, 0o600}, {filepath.Join(rec.Dir, "seed.iso"), 0o600},
		} {
			m, gid := mode(t, c.path)
			if m != c.want {
				t.Errorf("%s: mode %v, want %v", c.path, m, c.want)
			}
			if c.want == 0o710 && gid != qemuGID {
				t.Errorf("%s: group %d, want QEMU's %d", c.path, gid, qemuGID)
			}
		}
	}
	check()

	// What an older vmpod left (0755 directories, 0644 files) is tightened
	// at start-up.
	for _, d := range []string{rec.Dir, rec.RunDir, e.Pods.ContainersDir()} {
		os.Chmod(d, 0o755)
	}
	for _, f := range []string{rec.RootDisk, filepath.Join(rec.Dir, "seed.iso")} {
		os.Chmod(f, 0o644)
	}
	e.Restart(t)
	if err := e.Pods.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	check()
}
