package imagetranslation

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReload(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rule := func(name, url string) string {
		return fmt.Sprintf("[[translations]]\nname = %q\nurl = %q\n", name, url)
	}
	a := writeFile(t, dir, "a.toml", rule("x", "http://a/x1"), base)
	tr := New(dir, discardLogger())

	// Each step changes the directory, then checks what the names translate to
	// ("" = no match) and the files in effect.
	steps := []struct {
		name      string
		change    func(t *testing.T)
		want      map[string]string
		wantFiles []string
	}{
		{
			name:      "initial",
			change:    func(*testing.T) {},
			want:      map[string]string{"x": "http://a/x1", "other": ""},
			wantFiles: []string{"a.toml"},
		},
		{
			name: "file added",
			change: func(t *testing.T) {
				writeFile(t, dir, "b.yaml", "translations:\n- name: other\n  url: http://b/other\n- name: x\n  url: http://b/x\n", base.Add(time.Minute))
			},
			want:      map[string]string{"x": "http://a/x1", "other": "http://b/other"},
			wantFiles: []string{"a.toml", "b.yaml"},
		},
		{
			name: "file changed, same size",
			change: func(t *testing.T) {
				writeFile(t, dir, "a.toml", rule("x", "http://a/x2"), base.Add(2*time.Minute))
			},
			want:      map[string]string{"x": "http://a/x2", "other": "http://b/other"},
			wantFiles: []string{"a.toml", "b.yaml"},
		},
		{
			name: "file broken",
			change: func(t *testing.T) {
				writeFile(t, dir, "a.toml", rule("x", "ftp://a/x"), base.Add(3*time.Minute))
			},
			want:      map[string]string{"x": "http://b/x", "other": "http://b/other"},
			wantFiles: []string{"b.yaml"},
		},
		{
			name: "file fixed",
			change: func(t *testing.T) {
				writeFile(t, dir, "a.toml", rule("x", "http://a/x3"), base.Add(4*time.Minute))
			},
			want:      map[string]string{"x": "http://a/x3", "other": "http://b/other"},
			wantFiles: []string{"a.toml", "b.yaml"},
		},
		{
			name: "file removed",
			change: func(t *testing.T) {
				if err := os.Remove(a); err != nil {
					t.Fatal(err)
				}
			},
			want:      map[string]string{"x": "http://b/x", "other": "http://b/other"},
			wantFiles: []string{"b.yaml"},
		},
		{
			name: "directory removed",
			change: func(t *testing.T) {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"x": "", "other": ""},
		},
		{
			name: "directory created again",
			change: func(t *testing.T) {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "c.toml", rule("other", "http://c/other"), base.Add(5*time.Minute))
			},
			want:      map[string]string{"x": "", "other": "http://c/other"},
			wantFiles: []string{"c.toml"},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			step.change(t)
			for name, wantURL := range step.want {
				m, err := tr.Translate(name)
				switch {
				case wantURL == "" && (err != nil || m.Matched):
					t.Errorf("Translate(%q) = %+v, %v; want no match", name, m, err)
				case wantURL != "" && (err != nil || m.Source.URL != wantURL):
					t.Errorf("Translate(%q) = %+v, %v; want URL %s", name, m, err, wantURL)
				}
			}
			var wantFiles []string
			for _, f := range step.wantFiles {
				wantFiles = append(wantFiles, filepath.Join(dir, f))
			}
			if got := tr.Files(); !slices.Equal(got, wantFiles) {
				t.Errorf("Files() = %v, want %v", got, wantFiles)
			}
		})
	}
}

func TestReloadFollowsSymlinks(t *testing.T) {
	// A Kubernetes ConfigMap volume: images.d/rules.toml -> ..data/rules.toml,
	// ..data -> ..v1; an update points ..data at ..v2.
	dir := t.TempDir()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, url := range []string{"http://v1/x", "http://v2/xx"} {
		v := filepath.Join(dir, fmt.Sprintf("..v%d", i+1))
		if err := os.Mkdir(v, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, v, "rules.toml", fmt.Sprintf("[[translations]]\nname = \"x\"\nurl = %q\n", url), base.Add(time.Duration(i)*time.Minute))
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/rules.toml", filepath.Join(dir, "rules.toml")); err != nil {
		t.Fatal(err)
	}
	tr := New(dir, discardLogger())
	if m, err := tr.Translate("x"); err != nil || m.Source.URL != "http://v1/x" {
		t.Fatalf("Translate(x) = %+v, %v; want v1", m, err)
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data.tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if m, err := tr.Translate("x"); err != nil || m.Source.URL != "http://v2/xx" {
		t.Fatalf("Translate(x) after update = %+v, %v; want v2", m, err)
	}
}

func TestConcurrentTranslate(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	content := func(i int) string {
		return fmt.Sprintf("[[translations]]\nname = \"cirros\"\nurl = \"http://h/cirros-%d\"\n[[translations]]\nregexp = '^vms/(.+)$'\nurl = \"http://h/%d/$1\"\n", i, i)
	}
	writeFile(t, dir, "a.toml", content(0), base)
	tr := New(dir, discardLogger())

	const (
		readers = 8
		calls   = 200
		writes  = 50
	)
	var wg sync.WaitGroup
	errs := make(chan error, readers*calls*2)
	for r := range readers {
		wg.Go(func() {
			for i := range calls {
				name, prefix := "cirros", "http://h/cirros-"
				if (r+i)%2 == 0 {
					name, prefix = "vms/ubuntu", "http://h/"
				}
				m, err := tr.Translate(name)
				if err != nil || !strings.HasPrefix(m.Source.URL, prefix) {
					errs <- fmt.Errorf("Translate(%q) = %+v, %v", name, m, err)
				}
				if !tr.Matches(name) {
					errs <- fmt.Errorf("Matches(%q) = false", name)
				}
				_ = tr.Files()
			}
		})
	}
	wg.Go(func() {
		for i := 1; i <= writes; i++ {
			// Write a new file then rename it over the old one, as a
			// careful admin (or a config management tool) would, so readers
			// never see a half-written file.
			// (No t.Fatal here: this is not the test's goroutine.)
			tmp := filepath.Join(dir, ".a.toml.tmp")
			mtime := base.Add(time.Duration(i) * time.Second)
			if err := errors.Join(
				os.WriteFile(tmp, []byte(content(i)), 0o644),
				os.Chtimes(tmp, mtime, mtime),
				os.Rename(tmp, filepath.Join(dir, "a.toml")),
			); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m, err := tr.Translate("cirros"); err != nil || m.Source.URL != fmt.Sprintf("http://h/cirros-%d", writes) {
		t.Errorf("after the writes Translate(cirros) = %+v, %v; want the last version", m, err)
	}
}
