package lifecycle_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// checkpointEnv is an Env whose restore directory is a temp dir.
func checkpointEnv(t *testing.T) (*lifecycletest.Env, string) {
	e := lifecycletest.NewEnv(t)
	dir := t.TempDir()
	e.Cfg.CheckpointRestoreDirs = dir
	e.Pods = e.NewPods()
	return e, dir
}

// checkpointed starts a VM in pod "a" and checkpoints it to dir/a.tar;
// it returns the container and the archive.
func checkpointed(t *testing.T, e *lifecycletest.Env, dir string) (id, archive string) {
	t.Helper()
	_, id = startVM(t, e, "a")
	archive = filepath.Join(dir, "a.tar")
	if err := e.Pods.CheckpointContainer(lifecycletest.Ctx(t), id, archive, 0); err != nil {
		t.Fatal(err)
	}
	return id, archive
}

func TestCheckpointKeepsTheVMRunning(t *testing.T) {
	e, dir := checkpointEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, id := startVM(t, e, "a")
	rec := e.Record(t, id)
	archive := filepath.Join(dir, "a.tar")
	if err := e.Pods.CheckpointContainer(ctx, id, archive, 0); err != nil {
		t.Fatal(err)
	}
	calls := strings.Join(e.LV.Calls(), "\n")
	if !strings.Contains(calls, "Save "+rec.Domain) || !strings.Contains(calls, "Restore "+rec.Domain+" paused") {
		t.Fatalf("calls:\n%s", calls)
	}
	if st := e.DomainState(t, rec.Domain); st.State != libvirttools.DomainRunning {
		t.Fatalf("domain %v after the checkpoint", st)
	}
	if got := e.Record(t, id); got.State != lifecycle.ContainerRunning {
		t.Fatalf("container %s after the checkpoint", got.State)
	}
	st, err := os.Stat(archive)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(e.StateDir, "checkpoint-*")); len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}

func TestCheckpointRefusals(t *testing.T) {
	e, dir := checkpointEnv(t)
	ctx := lifecycletest.Ctx(t)
	sb, err := e.Pods.RunSandbox(ctx, pod("c"), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sb, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.CheckpointContainer(ctx, id, filepath.Join(dir, "x.tar"), 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a created container: %v", err)
	}
	if err := e.Pods.CheckpointContainer(ctx, id, "relative.tar", 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a relative location: %v", err)
	}
	if err := e.Pods.CheckpointContainer(ctx, "nope", filepath.Join(dir, "x.tar"), 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("an unknown container: %v", err)
	}
}

func TestRestoreIntoANewPod(t *testing.T) {
	e, dir := checkpointEnv(t)
	ctx := lifecycletest.Ctx(t)
	old, archive := checkpointed(t, e, dir)
	sb, err := e.Pods.RunSandbox(ctx, pod("b"), "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ctr("vm")
	cfg.Image = &runtimeapi.ImageSpec{Image: archive}
	id, err := e.Pods.CreateContainer(ctx, sb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := e.Record(t, id)
	if rec.State != lifecycle.ContainerCreated || rec.Restore == nil || rec.Restore.From != archive || rec.ImageRef != e.Record(t, old).ImageRef {
		t.Fatalf("restored record %+v", rec)
	}
	x := e.DomainXML(t, rec.Domain)
	if x.Name != rec.Domain || strings.Contains(mustMarshal(t, x), e.Record(t, old).Dir) {
		t.Fatalf("the restored domain still names the old container:\n%s", mustMarshal(t, x))
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(e.LV.Calls(), "Restore "+rec.Domain+" paused") {
		t.Fatalf("calls %v", e.LV.Calls())
	}
	if got := e.Record(t, id); got.State != lifecycle.ContainerRunning {
		t.Fatalf("restored container %s", got.State)
	}
	if _, err := os.Stat(rec.Restore.MemoryFile); !os.IsNotExist(err) {
		t.Fatalf("the save image is kept after the start: %v", err)
	}
	// The original runs on.
	if st := e.DomainState(t, e.Record(t, old).Domain); st.State != libvirttools.DomainRunning {
		t.Fatalf("original %v", st)
	}
}

func TestRestoreRefusals(t *testing.T) {
	e, dir := checkpointEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, archive := checkpointed(t, e, dir)
	outside := filepath.Join(t.TempDir(), "a.tar")
	b, _ := os.ReadFile(archive)
	os.WriteFile(outside, b, 0o600)
	tampered := filepath.Join(dir, "tampered.tar")
	bad := append([]byte(nil), b...)
	bad[len(bad)-2048] ^= 1 // inside the last member's data
	os.WriteFile(tampered, bad, 0o600)
	link := filepath.Join(dir, "link.tar")
	os.Symlink(outside, link)

	other := pod("b")
	other.Metadata.Namespace = "other"
	for _, tc := range []struct {
		name, image string
		pod         *runtimeapi.PodSandboxConfig
		want        error
	}{
		{"outside the restore dirs", outside, pod("b1"), errdefs.ErrInvalidArgument},
		{"a symlink out of the restore dirs", link, pod("b2"), errdefs.ErrInvalidArgument},
		{"a missing archive", filepath.Join(dir, "none.tar"), pod("b3"), errdefs.ErrNotFound},
		{"a tampered archive", tampered, pod("b4"), errdefs.ErrInvalidArgument},
		{"another namespace", archive, other, errdefs.ErrPermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := e.Pods.RunSandbox(ctx, tc.pod, "")
			if err != nil {
				t.Fatal(err)
			}
			before := len(e.ContainerRecords(t))
			cfg := ctr("vm")
			cfg.Image = &runtimeapi.ImageSpec{Image: tc.image}
			_, err = e.Pods.CreateContainer(ctx, sb, cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n := len(e.ContainerRecords(t)); n != before {
				t.Fatalf("%d container records, was %d", n, before)
			}
			if doms := e.Domains(t); len(doms) != 1 {
				t.Fatalf("domains left: %v", doms)
			}
			if ents := lifecycletest.DirEntries(t, e.Pods.ContainersDir()); len(ents) != 1 {
				t.Fatalf("container dirs left: %v", ents)
			}
		})
	}
}

func mustMarshal(t *testing.T, x interface{ Marshal() (string, error) }) string {
	s, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRestoreFromACheckpointImage: an archive pulled as a checkpoint
// image (its file in the image store) restores as the archive does, into
// a pod of its namespace only; its checker (pkg/image's) verifies it and
// names its base image and the names to pull it by.
func TestRestoreFromACheckpointImage(t *testing.T) {
	e, dir := checkpointEnv(t)
	ctx := lifecycletest.Ctx(t)
	_, archive := checkpointed(t, e, dir)
	base, err := lifecycle.CheckpointImageChecker(&e.Cfg)(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	if base.ID != lifecycletest.ImageDebian.ID || !slices.Equal(base.Names, []string{"debian:12"}) {
		t.Fatalf("checkpoint base %+v, want %s by debian:12", base, lifecycletest.ImageDebian.ID)
	}
	ckpt := image.Image{ID: "sha256:" + strings.Repeat("c1", 32), RepoTags: []string{"registry.test/ckpt:1"}, Format: image.FormatCheckpoint,
		Checkpoint: &base, Verified: true}
	e.Images.Images = append(e.Images.Images, ckpt)
	b, _ := os.ReadFile(archive)
	if err := os.WriteFile(e.Images.Path(ckpt.ID), b, 0o600); err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), b...)
	tampered[len(tampered)-2048] ^= 1
	tamperedPath := filepath.Join(t.TempDir(), "t.tar")
	os.WriteFile(tamperedPath, tampered, 0o600)
	if _, err := lifecycle.CheckpointImageChecker(&e.Cfg)(ctx, tamperedPath); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("the checker on a tampered archive: %v", err)
	}

	other := pod("o")
	other.Metadata.Namespace = "other"
	sbOther, err := e.Pods.RunSandbox(ctx, other, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ctr("vm")
	cfg.Image = &runtimeapi.ImageSpec{Image: ckpt.ID, UserSpecifiedImage: "registry.test/ckpt:1"}
	before := len(e.ContainerRecords(t))
	if _, err := e.Pods.CreateContainer(ctx, sbOther, cfg); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("a checkpoint image restored in another namespace: %v", err)
	}
	if n := len(e.ContainerRecords(t)); n != before {
		t.Fatalf("%d container records after the refusal, was %d", n, before)
	}

	sb, err := e.Pods.RunSandbox(ctx, pod("b"), "")
	if err != nil {
		t.Fatal(err)
	}
	// What a restored VM cannot get is refused, not dropped.
	withCmd := ctr("vm")
	withCmd.Image, withCmd.Command = cfg.Image, []string{"/bin/true"}
	withShare := ctr("vm")
	withShare.Image, withShare.Mounts = cfg.Image, []*runtimeapi.Mount{{HostPath: t.TempDir(), ContainerPath: "/data"}}
	for what, c := range map[string]*runtimeapi.ContainerConfig{"a command": withCmd, "a shared directory": withShare} {
		if _, err := e.Pods.CreateContainer(ctx, sb, c); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "restores a checkpoint") {
			t.Fatalf("a restore with %s: %v, want FailedPrecondition", what, err)
		}
	}
	if n := len(e.ContainerRecords(t)); n != before {
		t.Fatalf("%d container records after the refusals, was %d", n, before)
	}
	id, err := e.Pods.CreateContainer(ctx, sb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := e.Record(t, id)
	if rec.Restore == nil || !strings.Contains(rec.Restore.From, "registry.test/ckpt:1") || rec.ImageRef != lifecycletest.ImageDebian.ID {
		t.Fatalf("restored record: restore %+v, image %s", rec.Restore, rec.ImageRef)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := e.Record(t, id); got.State != lifecycle.ContainerRunning {
		t.Fatalf("restored container %s", got.State)
	}
	if _, err := os.Stat(e.Images.Path(ckpt.ID)); err != nil {
		t.Fatalf("the checkpoint image's file: %v", err)
	}
}
