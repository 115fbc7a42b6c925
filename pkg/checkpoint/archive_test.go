package checkpoint

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

var allowed = map[string]int64{"memory.save": 1 << 20, "root.qcow2": 1 << 20}

func writeArchive(t *testing.T) (string, string) {
	t.Helper()
	d := t.TempDir()
	for name, content := range map[string]string{"memory.save": "MEMORY", "root.qcow2": "DISK"} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(d, "ckpt.tar")
	err := Write(dst, map[string]string{"namespace": "a"}, []Member{
		{"memory.save", filepath.Join(d, "memory.save")}, {"root.qcow2", filepath.Join(d, "root.qcow2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, dst
}

func TestRoundTrip(t *testing.T) {
	_, dst := writeArchive(t)
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Fatalf("archive mode %v, want 0600", st.Mode().Perm())
	}
	out := t.TempDir()
	m, err := Extract(dst, out, Limits{Allowed: allowed, Check: func(m *Manifest) error {
		var meta map[string]string
		json.Unmarshal(m.Meta, &meta)
		if meta["namespace"] != "a" {
			t.Errorf("meta = %v", meta)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Members) != 2 {
		t.Fatalf("members %v", m.Members)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "memory.save")); string(b) != "MEMORY" {
		t.Fatalf("memory.save = %q", b)
	}
	// Verify reads the same archive and writes nothing.
	before, _ := os.ReadDir(filepath.Dir(dst))
	if m, err := Verify(dst, Limits{Allowed: allowed}); err != nil || len(m.Members) != 2 {
		t.Fatalf("Verify: %v, %v", m, err)
	}
	if after, _ := os.ReadDir(filepath.Dir(dst)); len(after) != len(before) {
		t.Fatalf("Verify wrote files: %v, before %v", after, before)
	}
}

// rewrite rebuilds the archive at src with edit applied to its entries.
func rewrite(t *testing.T, src string, edit func(hs []*tar.Header, bodies [][]byte) ([]*tar.Header, [][]byte)) string {
	t.Helper()
	f, _ := os.Open(src)
	defer f.Close()
	tr := tar.NewReader(f)
	var hs []*tar.Header
	var bodies [][]byte
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(tr)
		hs, bodies = append(hs, h), append(bodies, b.Bytes())
	}
	hs, bodies = edit(hs, bodies)
	dst := src + ".bad"
	out, _ := os.Create(dst)
	tw := tar.NewWriter(out)
	for i, h := range hs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(bodies[i]))
		}
		tw.WriteHeader(h)
		tw.Write(bodies[i])
	}
	tw.Close()
	out.Close()
	return dst
}

func TestExtractRefuses(t *testing.T) {
	manifest := func(bodies [][]byte, f func(*Manifest)) []byte {
		var m Manifest
		json.Unmarshal(bodies[0], &m)
		f(&m)
		b, _ := json.Marshal(m)
		return b
	}
	for name, edit := range map[string]func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte){
		"a flipped byte": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			b[1] = []byte("MEMORX")
			return hs, b
		},
		"a member the manifest does not list": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			return append(hs, &tar.Header{Name: "extra", Typeflag: tar.TypeReg, Mode: 0o600}), append(b, []byte("x"))
		},
		"a missing member": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			return hs[:2], b[:2]
		},
		"a member twice": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			return append(hs, hs[1]), append(b, b[1])
		},
		"a symlink": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			hs[1] = &tar.Header{Name: "memory.save", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}
			return hs, b
		},
		"the manifest not first": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			hs[0], hs[1], b[0], b[1] = hs[1], hs[0], b[1], b[0]
			return hs, b
		},
		"another version": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			b[0] = manifest(b, func(m *Manifest) { m.Version = 2 })
			return hs, b
		},
		"a path in a name": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			b[0] = manifest(b, func(m *Manifest) { m.Members[0].Name = "../memory.save" })
			hs[1].Name = "../memory.save"
			return hs, b
		},
		"a member above its limit": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			big := bytes.Repeat([]byte("x"), 2<<20)
			b[0] = manifest(b, func(m *Manifest) { m.Members[0].Size = int64(len(big)) })
			b[1] = big
			return hs, b
		},
		"a size the manifest does not say": func(hs []*tar.Header, b [][]byte) ([]*tar.Header, [][]byte) {
			b[1] = []byte("MEMORY-AND-MORE")
			return hs, b
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, src := writeArchive(t)
			bad := rewrite(t, src, edit)
			out := t.TempDir()
			if _, err := Verify(bad, Limits{Allowed: allowed}); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Verify: err = %v, want InvalidArgument", err)
			}
			_, err := Extract(bad, out, Limits{Allowed: allowed})
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Fatalf("left behind: %v", left)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(out), "memory.save")); err == nil {
				t.Fatal("wrote outside the directory")
			}
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	_, src := writeArchive(t)
	wantErr := errors.New("wrong namespace")
	if _, err := Extract(src, t.TempDir(), Limits{Allowed: allowed, Check: func(*Manifest) error { return wantErr }}); !errors.Is(err, wantErr) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Extract(filepath.Join(t.TempDir(), "none"), t.TempDir(), Limits{Allowed: allowed}); err == nil || !strings.Contains(err.Error(), "open") {
		t.Fatalf("missing archive: %v", err)
	}
}

func FuzzExtract(f *testing.F) {
	d := f.TempDir()
	os.WriteFile(filepath.Join(d, "memory.save"), []byte("M"), 0o600)
	Write(filepath.Join(d, "a.tar"), "meta", []Member{{"memory.save", filepath.Join(d, "memory.save")}})
	seed, _ := os.ReadFile(filepath.Join(d, "a.tar"))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.tar")
		os.WriteFile(src, data, 0o600)
		out := filepath.Join(dir, "out")
		os.Mkdir(out, 0o700)
		if _, err := Extract(src, out, Limits{Allowed: allowed}); err != nil {
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Fatalf("a refused archive left %v", left)
			}
		}
	})
}
