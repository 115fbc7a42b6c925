package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// TestSubstitutionThroughAForgedConfig is the attack of issue 13: a
// registry lists a public image's config as the config of its own image.
// Before, the store recorded the attacker's disk under the public image's
// ID, and a later pull of the public image was answered with it.
func TestSubstitutionThroughAForgedConfig(t *testing.T) {
	reg := newTestRegistry(t)
	realDisk, evilDisk := fakeQcow2("the real disk"), fakeQcow2("the attacker's disk")
	real := containerDisk(t, realDisk)
	realRef := reg.push(real, "public/real:1")
	realCfg, _ := real.RawConfigFile()
	evilRef := reg.pushForged("evil/x:1", realCfg, containerDisk(t, evilDisk))
	s, _ := newStore(t, mapTranslator{})
	trustRegistry(t, s, reg)
	ctx := context.Background()

	if img, err := s.Pull(ctx, evilRef, nil); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("pull of the forged image = %+v, %v; want InvalidArgument about the diff_id", img, err)
	}
	img, err := s.Pull(ctx, realRef, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := storedBytes(t, s, realRef); !bytes.Equal(got, realDisk) {
		t.Fatalf("the public image's file holds %q", got)
	}
	cd, _ := real.ConfigName()
	if img.ID != cd.String() || !img.Verified {
		t.Errorf("image = %+v, want ID %s, verified", img, cd)
	}
	if len(tmpEntries(t, s)) != 0 {
		t.Errorf("temp files left: %v", tmpEntries(t, s))
	}
}

// TestSubstitutionOfAnHTTPImage: an OCI image whose "config" is the bytes
// of a public HTTP(S) disk claims that disk's digest as its ID. Before, the
// HTTP(S) pull (by name or pinned digest) attached to that record and
// served the attacker's disk.
func TestSubstitutionOfAnHTTPImage(t *testing.T) {
	srv := newServer(t)
	public := fakeQcow2("the public disk")
	srv.put("/public.qcow2", public)
	reg := newTestRegistry(t)
	evilRef := reg.pushForged("evil/x:1", public, containerDisk(t, fakeQcow2("the attacker's disk")))
	s, _ := newStore(t, mapTranslator{"public": srv.URL + "/public.qcow2"})
	trustRegistry(t, s, reg)
	ctx := context.Background()

	if _, err := s.Pull(ctx, evilRef, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("pull of the forged image: %v, want InvalidArgument", err)
	}
	for _, n := range []string{"public@" + sha(public), "public"} {
		img, err := s.Pull(ctx, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := storedBytes(t, s, n); img.ID != sha(public) || !bytes.Equal(got, public) {
			t.Fatalf("pull %s: ID %s, file %q", n, img.ID, got)
		}
	}
}

// TestUnverifiedRecordsDropped: records an older vmpod stored from an
// unverified manifest (no "verified" mark) are dropped at start-up, so a
// store poisoned before the upgrade serves the real bytes after it.
func TestUnverifiedRecordsDropped(t *testing.T) {
	srv := newServer(t)
	public := fakeQcow2("the public disk")
	srv.put("/public.qcow2", public)
	s, dir := newStore(t, mapTranslator{"public": srv.URL + "/public.qcow2"})
	evil := fakeQcow2("the attacker's disk")
	if err := os.WriteFile(s.filePath(sha(evil)), evil, 0o444); err != nil {
		t.Fatal(err)
	}
	poisoned := &Image{ID: sha(public), DiskDigest: sha(evil), RepoTags: []string{"public:latest"}, Format: "qcow2",
		Origins: []Origin{{URL: "docker://evil.example/x:1"}}}
	if err := s.opts.Meta.Put(store.Images, poisoned.ID, poisoned); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{Dir: dir + "/images", Meta: s.opts.Meta, Translator: s.opts.Translator, Checker: fakeChecker{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get("public"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the unverified record survived start-up: %v", err)
	}
	if _, err := s2.Pull(context.Background(), "public", nil); err != nil {
		t.Fatal(err)
	}
	if got := storedBytes(t, s2, "public"); !bytes.Equal(got, public) {
		t.Fatalf("public serves %q", got)
	}
}

// TestPinnedPullsAskTheRegistry: a name pinned to a stored image's digest
// is no way around the registry and its pull secret. Before, any
// "repo@sha256:<ID>" was answered from the store when the ID was stored.
func TestPinnedPullsAskTheRegistry(t *testing.T) {
	reg := newTestRegistry(t)
	reg.user, reg.pass = "alice", "s3cret"
	private := containerDisk(t, fakeQcow2("private disk"))
	ref := reg.push(private, "private/vm:1")
	s, _ := newStore(t, mapTranslator{})
	trustRegistry(t, s, reg)
	ctx := context.Background()
	img, err := s.Pull(ctx, ref, &oci.Auth{Username: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	md, _ := private.Digest()
	for _, n := range []string{
		reg.host + "/private/vm@" + img.ID,      // the ID as a digest
		reg.host + "/private/vm@" + md.String(), // the real manifest digest
		reg.host + "/other/repo@" + img.ID,
		"anything@" + img.ID,
	} {
		if got, err := s.Pull(ctx, n, nil); err == nil {
			t.Errorf("pull %s without credentials = %s; want a refusal", n, got.ID)
		}
	}
	// With the credentials, the pinned manifest pull works and downloads no
	// layer again.
	layers, _ := private.Layers()
	ld, _ := layers[0].Digest()
	before := reg.gets(ld.String())
	if _, err := s.Pull(ctx, reg.host+"/private/vm@"+md.String(), &oci.Auth{Username: "alice", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	if reg.gets(ld.String()) != before {
		t.Errorf("a pinned pull of a stored image from its own repository downloaded the layer again")
	}
}

// TestOtherRepositoryProvesItsContent: a manifest in another repository
// naming a stored config downloads and verifies the layers before it gets
// the stored image: knowing an image's config digest is not having it.
func TestOtherRepositoryProvesItsContent(t *testing.T) {
	reg := newTestRegistry(t)
	disk := fakeQcow2("shared disk")
	img := containerDisk(t, disk)
	first := reg.push(img, "a/vm:1")
	second := reg.push(img, "b/vm:1")
	s, _ := newStore(t, mapTranslator{})
	trustRegistry(t, s, reg)
	ctx := context.Background()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()

	one, err := s.Pull(ctx, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, first, nil); err != nil || reg.gets(ld.String()) != 1 {
		t.Fatalf("re-pull from the same repository: %v, %d layer downloads; want 1", err, reg.gets(ld.String()))
	}
	two, err := s.Pull(ctx, second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.gets(ld.String()) != 2 {
		t.Errorf("pull from another repository downloaded the layer %d times in all, want 2", reg.gets(ld.String()))
	}
	if one.ID != two.ID || len(s.List()) != 1 || !bytes.Equal(storedBytes(t, s, second), disk) {
		t.Errorf("images %v, want one image with both names", s.List())
	}
}

// TestPinnedHTTPPullOnlyForItsNameOrURL: a pinned HTTP(S) pull is answered
// from the store for a name that pinned the digest before or a rule URL
// that served it; another name downloads (and then shares the record,
// the bytes being the same).
func TestPinnedHTTPPullOnlyForItsNameOrURL(t *testing.T) {
	srv := newServer(t)
	body := fakeQcow2("pinned")
	srv.put("/p.qcow2", body)
	srv.put("/copy.qcow2", body)
	s, _ := newStore(t, mapTranslator{"p": srv.URL + "/p.qcow2", "q": srv.URL + "/copy.qcow2"})
	ctx := context.Background()
	pin := "@" + sha(body)
	if _, err := s.Pull(ctx, "p"+pin, nil); err != nil {
		t.Fatal(err)
	}
	gets := srv.gets.Load()
	if _, err := s.Pull(ctx, "p"+pin, nil); err != nil || srv.gets.Load() != gets {
		t.Fatalf("repeat pinned pull: %v, downloads %d -> %d", err, gets, srv.gets.Load())
	}
	img, err := s.Pull(ctx, "q"+pin, nil)
	if err != nil || srv.gets.Load() != gets+1 {
		t.Fatalf("pinned pull under another name and URL: %v, downloads %d -> %d; want one download", err, gets, srv.gets.Load())
	}
	if len(img.RepoDigests) != 2 || len(s.List()) != 1 {
		t.Fatalf("record = %+v", img)
	}
}

// TestOriginsRedacted: user info and query strings of rule URLs never
// reach the records (crictl inspecti shows origins), and records an older
// vmpod stored with them are redacted at start-up.
func TestOriginsRedacted(t *testing.T) {
	srv := newServer(t)
	srv.put("/s.qcow2", fakeQcow2("secret-url disk"))
	secretURL := strings.Replace(srv.URL, "http://", "http://alice:s3cret@", 1) + "/s.qcow2?X-Amz-Signature=s3cret"
	s, dir := newStore(t, mapTranslator{"s": secretURL})
	var logs bytes.Buffer
	ctx := logCtx(&logs)
	img, err := s.Pull(ctx, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(dir + "/metadata.db")
	if bytes.Contains(raw, []byte("s3cret")) {
		t.Error("the metadata store holds a secret")
	}
	// A record of an older vmpod (bbolt may keep its old bytes in free
	// pages; the records are what is read and shown).
	legacy := &Image{ID: sha([]byte("x")), Size: 1, Format: "raw", Origins: []Origin{{URL: "https://bob:s3cret@h/d.img?sig=s3cret", ETag: `"e"`}}}
	os.WriteFile(s.filePath(legacy.ID), []byte("x"), 0o444)
	s.opts.Meta.Put(store.Images, legacy.ID, legacy)
	s2, err := Open(Options{Dir: dir + "/images", Meta: s.opts.Meta, Translator: s.opts.Translator, Checker: fakeChecker{}, Log: s.log})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range s2.List() {
		for _, o := range rec.Origins {
			if strings.Contains(o.URL, "s3cret") {
				t.Errorf("origin of %s shows a secret: %s", rec.ID, o.URL)
			}
		}
	}
	if o := img.Origins[0].URL; o != "http://redacted@"+strings.TrimPrefix(srv.URL, "http://")+"/s.qcow2?redacted" {
		t.Errorf("origin = %q", o)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows a secret:\n%s", logs.String())
	}
}

// TestPullNeedsFreeSpace: a pull that would leave less than the reserve
// free is refused and leaves nothing.
func TestPullNeedsFreeSpace(t *testing.T) {
	srv := newServer(t)
	srv.put("/big.qcow2", fakeQcow2(strings.Repeat("x", 1<<20)))
	s, _ := newStore(t, mapTranslator{"big": srv.URL + "/big.qcow2"})
	s.statfs = func(string) (uint64, uint64, error) { return 1<<20 + 100<<20, 10 << 30, nil } // 101 MiB free of 10 GiB
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := s.Pull(ctx, "big", nil)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "kept free") {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
	if len(s.List()) != 0 || len(tmpEntries(t, s)) != 0 {
		t.Fatalf("left: %v %v", s.List(), tmpEntries(t, s))
	}
	s.statfs = func(string) (uint64, uint64, error) { return 10 << 30, 100 << 30, nil }
	if _, err := s.Pull(ctx, "big", nil); err != nil {
		t.Fatalf("with room: %v", err)
	}
}

// logCtx returns a context whose logger writes to w at debug level.
func logCtx(w io.Writer) context.Context {
	return logging.With(context.Background(), slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
}
