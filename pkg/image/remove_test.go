package image

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRemove(t *testing.T) {
	srv := newServer(t)
	srv.put("/r.qcow2", fakeQcow2("r"))
	srv.put("/u.qcow2", fakeQcow2("used"))
	s, _ := newStore(t, mapTranslator{"r": srv.URL + "/r.qcow2", "r2": srv.URL + "/r.qcow2", "u": srv.URL + "/u.qcow2"})
	ctx := context.Background()
	img, _ := s.Pull(ctx, "r", nil)
	if _, err := s.Pull(ctx, "r2:x", nil); err != nil {
		t.Fatal(err)
	}
	// Removing by one name removes all names of the digest, and the file.
	if err := s.Remove("r2:x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("r"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("other name survived: %v", err)
	}
	if _, err := os.Stat(s.Path(img.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file survived: %v", err)
	}
	if err := s.Remove("r"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	used, _ := s.Pull(ctx, "u", nil)
	s.SetInUse(func(id string) bool { return id == used.ID })
	if err := s.Remove("u"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path(used.ID)); err != nil {
		t.Fatalf("in-use file deleted: %v", err)
	}
	s.SetInUse(func(string) bool { return false })
	s.Release(used.ID)
	if _, err := os.Stat(s.Path(used.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("released file of a removed image kept: %v", err)
	}
}
