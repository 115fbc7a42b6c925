package store

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

type rec struct {
	ID   string
	Size int64
}

func TestPutGetListDelete(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(Images, "b", rec{"b", 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Images, "a", rec{"a", 1}); err != nil {
		t.Fatal(err)
	}
	var r rec
	if err := s.Get(Images, "a", &r); err != nil || r.Size != 1 {
		t.Fatalf("Get a = %+v, %v", r, err)
	}
	if err := s.Get(Images, "zz", &r); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get missing: %v, want NotFound", err)
	}
	all, err := List[rec](s, Images)
	if err != nil || len(all) != 2 || all[0].ID != "a" || all[1].ID != "b" {
		t.Fatalf("List = %+v, %v", all, err)
	}
	if other, _ := List[rec](s, Sandboxes); len(other) != 0 {
		t.Fatalf("buckets not separate: %+v", other)
	}
	if err := s.Delete(Images, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(Images, "a"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	all, _ = List[rec](s, Images)
	if len(all) != 1 {
		t.Fatalf("after delete: %+v", all)
	}
}

func TestReopenKeepsData(t *testing.T) {
	p := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Containers, "c1", rec{"c1", 5}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var r rec
	if err := s.Get(Containers, "c1", &r); err != nil || r.Size != 5 {
		t.Fatalf("after reopen: %+v %v", r, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "metadata.db")
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return b.Put(versionKey, []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(p)
	if err == nil || !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "newer vmpod") {
		t.Fatalf("Open(newer) = %v, want FailedPrecondition about a newer vmpod", err)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's flock is per open file description, so a second Open in the
	// same process contends like a second daemon would.
	_, err = Open(p)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v", err)
	}
}
