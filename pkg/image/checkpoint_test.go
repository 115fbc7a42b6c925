package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmpod/vmpod/pkg/image/oci"
)

// jsonCheckpoints is a CheckpointChecker for archives that are a
// CheckpointBase as JSON (the archive format is pkg/lifecycle's; the
// store only acts on the base the checker returns).
func jsonCheckpoints(_ context.Context, path string) (CheckpointBase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CheckpointBase{}, err
	}
	var base CheckpointBase
	if err := json.Unmarshal(b, &base); err != nil || base.ID == "" {
		return CheckpointBase{}, errors.Join(errors.New("not a checkpoint archive"), errdefs.ErrInvalidArgument)
	}
	return base, nil
}

func checkpointImage(t *testing.T, base CheckpointBase) v1.Image {
	t.Helper()
	b, _ := json.Marshal(base)
	return oneFileImage(t, "checkpoint/web.tar", b)
}

// TestCheckpointImagePullsItsBase: a checkpoint image is stored with its
// base image, which its pull fetched with the same credentials; an
// archive naming another tenant's private image that is already on the
// node is refused to a pull without that image's credentials, on the
// first pull and on later ones that download nothing.
func TestCheckpointImagePullsItsBase(t *testing.T) {
	reg := newTestRegistry(t)
	reg.user, reg.pass, reg.private = "alice", "s3cret", "alice/" // alice/* needs her credentials, the rest is public
	alice := &oci.Auth{Username: "alice", Password: "s3cret"}
	s, _ := newStore(t, mapTranslator{})
	s.opts.Checkpoints = jsonCheckpoints
	trustRegistry(t, s, reg)
	ctx := context.Background()

	disk := containerDisk(t, fakeQcow2("alice's private disk"))
	diskRef := reg.push(disk, "alice/vm:1")
	if _, err := s.Pull(ctx, diskRef, nil); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("the private image without credentials: %v", err)
	}
	base, err := s.Pull(ctx, diskRef, alice)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := disk.Digest()
	pinned := reg.host + "/alice/vm@" + md.String()

	// Alice's checkpoint in a public repository, pulled with her
	// credentials: stored, with its base.
	mine := reg.push(checkpointImage(t, CheckpointBase{ID: base.ID, Names: []string{pinned}}), "public/ckpt:1")
	img, err := s.Pull(ctx, mine, alice)
	if err != nil {
		t.Fatal(err)
	}
	if img.Format != FormatCheckpoint || img.Checkpoint == nil || img.Checkpoint.ID != base.ID {
		t.Fatalf("checkpoint image stored as %+v", img)
	}
	if got, _ := jsonCheckpoints(ctx, s.Path(img.ID)); got.ID != base.ID {
		t.Fatalf("the stored file is not the archive: %+v", got)
	}
	// The same image again without credentials: nothing to download, but
	// the base must still be reachable with this pull's credentials.
	if _, err := s.Pull(ctx, mine, nil); !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "base image") {
		t.Fatalf("a pull of a stored checkpoint image without the base's credentials: %v; want Unauthenticated naming the base image", err)
	}

	// Mallory's archive names Alice's image (it is on the node) by its
	// pinned name, or by its ID only, or by nothing.
	for i, names := range [][]string{{pinned}, {base.ID}, nil} {
		ref := reg.push(checkpointImage(t, CheckpointBase{ID: base.ID, Names: names}), "mallory/ckpt:"+string(rune('a'+i)))
		if got, err := s.Pull(ctx, ref, nil); err == nil {
			t.Fatalf("mallory's checkpoint naming %q was stored as %s", names, got.ID)
		} else {
			t.Log(err)
		}
		if _, err := s.Get(ref); !errdefs.IsNotFound(err) {
			t.Fatalf("a refused checkpoint image is in the store: %v", err)
		}
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// TestCheckpointImageCredentialsStayWithTheirRegistry: credentials given
// for a checkpoint image without a server address are not sent to the
// registry its archive names for the base image.
func TestCheckpointImageCredentialsStayWithTheirRegistry(t *testing.T) {
	home := newTestRegistry(t)
	home.user, home.pass = "alice", "s3cret"
	// Its repositories are public, but it asks for credentials (a ping
	// challenge), so a client holding some would send them.
	elsewhere := newTestRegistry(t)
	elsewhere.user, elsewhere.pass, elsewhere.private = "eve", "x", "eve/"
	s, _ := newStore(t, mapTranslator{})
	s.opts.Checkpoints = jsonCheckpoints
	trustRegistries(t, s, home, elsewhere)
	ctx := context.Background()
	baseRef := elsewhere.push(containerDisk(t, fakeQcow2("a public disk")), "vm:1")
	base, err := s.Pull(ctx, baseRef, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := home.push(checkpointImage(t, CheckpointBase{ID: base.ID, Names: []string{baseRef}}), "ckpt:1")
	elsewhere.mu.Lock()
	elsewhere.authSeen = 0 // the push's
	elsewhere.mu.Unlock()
	img, err := s.Pull(ctx, ref, &oci.Auth{Username: "alice", Password: "s3cret"})
	if err != nil || img.Checkpoint == nil {
		t.Fatalf("checkpoint image with a public base elsewhere: %+v, %v", img, err)
	}
	elsewhere.mu.Lock()
	n := elsewhere.authSeen
	elsewhere.mu.Unlock()
	if n != 0 {
		t.Fatalf("the base image's registry was sent credentials %d times", n)
	}
}

// TestCheckpointImageRefusals: a base whose name now gives another image,
// a base that is itself a checkpoint (even the image itself: no pull
// waits for itself), a store without a checker, a file that is no
// archive.
func TestCheckpointImageRefusals(t *testing.T) {
	reg := newTestRegistry(t)
	s, _ := newStore(t, mapTranslator{})
	s.opts.Checkpoints = jsonCheckpoints
	trustRegistry(t, s, reg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	one := reg.push(containerDisk(t, fakeQcow2("one")), "vm:1")
	first, err := s.Pull(ctx, one, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(containerDisk(t, fakeQcow2("two")), "vm:1") // the tag moves

	moved := reg.push(checkpointImage(t, CheckpointBase{ID: first.ID, Names: []string{one}}), "ckpt:moved")
	if _, err := s.Pull(ctx, moved, nil); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "is now image") {
		t.Fatalf("a base whose tag moved: %v; want FailedPrecondition", err)
	}

	inner := reg.push(checkpointImage(t, CheckpointBase{ID: first.ID, Names: []string{one}}), "ckpt:inner")
	reg.push(containerDisk(t, fakeQcow2("one")), "vm:1") // back
	outer := reg.push(checkpointImage(t, CheckpointBase{ID: "sha256:" + strings.Repeat("0", 64), Names: []string{inner}}), "ckpt:outer")
	self := reg.ref("ckpt:self").String()
	reg.push(checkpointImage(t, CheckpointBase{ID: "sha256:" + strings.Repeat("1", 64), Names: []string{self}}), "ckpt:self")
	for _, ref := range []string{outer, self} {
		if _, err := s.Pull(ctx, ref, nil); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "itself a checkpoint image") {
			t.Fatalf("%s, whose base is a checkpoint image: %v; want InvalidArgument", ref, err)
		}
	}

	junk := reg.push(oneFileImage(t, "checkpoint/x.tar", []byte("not an archive")), "ckpt:junk")
	if _, err := s.Pull(ctx, junk, nil); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a checkpoint archive") {
		t.Fatalf("a checkpoint image without an archive: %v", err)
	}
	s.opts.Checkpoints = nil
	if _, err := s.Pull(ctx, inner, nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a checkpoint image in a store that restores none: %v", err)
	}
	if left := tmpEntries(t, s); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// trustRegistries lets the store pull from regs over plain HTTP.
func trustRegistries(t *testing.T, s *Store, regs ...*testRegistry) {
	t.Helper()
	var conf strings.Builder
	for _, r := range regs {
		conf.WriteString("[[registry]]\nlocation = \"" + r.host + "\"\ninsecure = true\n")
	}
	p := t.TempDir() + "/registries.conf"
	if err := os.WriteFile(p, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s.opts.OCI.RegistriesConf = p
}
