package imagetranslation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// discardLogger drops everything; tests that check logs use a buffer.
func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// writeFile writes content to dir/name and sets its modification time, so
// that the fingerprint of the directory changes even on file systems with
// coarse timestamps.
func writeFile(t *testing.T, dir, name, content string, mtime time.Time) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeFiles writes files into a new temporary directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, content := range files {
		writeFile(t, dir, name, content, base)
	}
	return dir
}

var digest = "sha256:" + strings.Repeat("0123456789abcdef", 4)

const cirrosTOML = `
[[translations]]
name = "cirros"
url = "https://images.example/cirros-0.6.2-x86_64-disk.img"

[[translations]]
regexp = '^vms/(.+)$'
url = "http://images.example/$1.qcow2"
transport = "internal"

[transports.internal]
timeout = "10m"
`

const cirrosYAML = `
translations:
- name: cirros
  url: https://images.example/cirros-0.6.2-x86_64-disk.img
- regexp: ^vms/(.+)$
  url: http://images.example/$1.qcow2
  transport: internal
transports:
  internal:
    timeout: 10m
`

func TestTranslate(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		image     string
		wantURL   string // "" when no rule must match
		wantFile  string // base name of Source.RuleFile
		wantTrans Transport
		wantDig   string
	}{
		{
			name:     "toml exact name without tag",
			files:    map[string]string{"a.toml": cirrosTOML},
			image:    "cirros",
			wantURL:  "https://images.example/cirros-0.6.2-x86_64-disk.img",
			wantFile: "a.toml",
		},
		{
			name:     "toml exact name with a tag",
			files:    map[string]string{"a.toml": cirrosTOML},
			image:    "cirros:latest",
			wantURL:  "https://images.example/cirros-0.6.2-x86_64-disk.img",
			wantFile: "a.toml",
		},
		{
			name:      "toml regexp with capture",
			files:     map[string]string{"a.toml": cirrosTOML},
			image:     "vms/ubuntu/22.04",
			wantURL:   "http://images.example/ubuntu/22.04.qcow2",
			wantFile:  "a.toml",
			wantTrans: Transport{Name: "internal", Timeout: 10 * time.Minute},
		},
		{
			name:     "yaml exact name with a tag",
			files:    map[string]string{"a.yaml": cirrosYAML},
			image:    "cirros:0.6",
			wantURL:  "https://images.example/cirros-0.6.2-x86_64-disk.img",
			wantFile: "a.yaml",
		},
		{
			name:      "yml regexp with capture",
			files:     map[string]string{"a.yml": cirrosYAML},
			image:     "vms/debian",
			wantURL:   "http://images.example/debian.qcow2",
			wantFile:  "a.yml",
			wantTrans: Transport{Name: "internal", Timeout: 10 * time.Minute},
		},
		{
			name:     "digest stripped before matching",
			files:    map[string]string{"a.toml": cirrosTOML},
			image:    "cirros:1@" + digest,
			wantURL:  "https://images.example/cirros-0.6.2-x86_64-disk.img",
			wantFile: "a.toml",
			wantDig:  digest,
		},
		{
			name:      "digest stripped before regexp matching",
			files:     map[string]string{"a.toml": cirrosTOML},
			image:     "vms/x@" + digest,
			wantURL:   "http://images.example/x.qcow2",
			wantFile:  "a.toml",
			wantTrans: Transport{Name: "internal", Timeout: 10 * time.Minute},
			wantDig:   digest,
		},
		{
			name: "tag-specific rule matches its tag",
			files: map[string]string{"a.toml": `
[[translations]]
name = "cirros:0.5"
url = "http://old/cirros"
`},
			image:    "cirros:0.5",
			wantURL:  "http://old/cirros",
			wantFile: "a.toml",
		},
		{
			name: "tag-specific rule does not match another tag",
			files: map[string]string{"a.toml": `
[[translations]]
name = "cirros:0.5"
url = "http://old/cirros"
`},
			image: "cirros:0.6",
		},
		{
			name: "tag-specific rule does not match the name without tag",
			files: map[string]string{"a.toml": `
[[translations]]
name = "cirros:0.5"
url = "http://old/cirros"
`},
			image: "cirros",
		},
		{
			name: "tag-specific rule beats a rule without tag in an earlier file",
			files: map[string]string{
				"a.toml": "[[translations]]\nname = \"cirros\"\nurl = \"http://any/cirros\"\n",
				"b.toml": "[[translations]]\nname = \"cirros:0.5\"\nurl = \"http://old/cirros\"\n",
			},
			image:    "cirros:0.5",
			wantURL:  "http://old/cirros",
			wantFile: "b.toml",
		},
		{
			name: "rule without tag still matches other tags next to a tag-specific one",
			files: map[string]string{
				"a.toml": "[[translations]]\nname = \"cirros\"\nurl = \"http://any/cirros\"\n",
				"b.toml": "[[translations]]\nname = \"cirros:0.5\"\nurl = \"http://old/cirros\"\n",
			},
			image:    "cirros:0.6",
			wantURL:  "http://any/cirros",
			wantFile: "a.toml",
		},
		{
			name: "registry port is not a tag",
			files: map[string]string{"a.toml": `
[[translations]]
name = "host:5000/x"
url = "http://h/x"
`},
			image:    "host:5000/x:7",
			wantURL:  "http://h/x",
			wantFile: "a.toml",
		},
		{
			name: "name rule does not match a longer name",
			files: map[string]string{"a.toml": `
[[translations]]
name = "cirros"
url = "http://h/x"
`},
			image: "vms/cirros",
		},
		{
			name: "exact name beats regexp of an earlier file",
			files: map[string]string{
				"a.toml": "[[translations]]\nregexp = '.*'\nurl = \"http://any/x\"\n",
				"b.yaml": "translations:\n- name: cirros\n  url: http://exact/cirros\n",
			},
			image:    "cirros",
			wantURL:  "http://exact/cirros",
			wantFile: "b.yaml",
		},
		{
			name: "exact names in file-name order",
			files: map[string]string{
				"20-b.toml": "[[translations]]\nname = \"cirros\"\nurl = \"http://b/cirros\"\n",
				"10-a.yaml": "translations:\n- name: cirros\n  url: http://a/cirros\n",
			},
			image:    "cirros",
			wantURL:  "http://a/cirros",
			wantFile: "10-a.yaml",
		},
		{
			name: "regexps in file-name order",
			files: map[string]string{
				"b.toml": "[[translations]]\nregexp = '^(.*)$'\nurl = \"http://b/$1\"\n",
				"a.toml": "[[translations]]\nregexp = '^x(.*)$'\nurl = \"http://a/$1\"\n",
			},
			image:    "xyz",
			wantURL:  "http://a/yz",
			wantFile: "a.toml",
		},
		{
			name: "regexps in order of appearance within a file",
			files: map[string]string{"a.toml": `
[[translations]]
regexp = '^x'
url = "http://first/"
[[translations]]
regexp = '^xy'
url = "http://second/"
`},
			image:    "xyz",
			wantURL:  "http://first/",
			wantFile: "a.toml",
		},
		{
			name: "regexp is not anchored unless it says so",
			files: map[string]string{"a.toml": `
[[translations]]
regexp = 'ubuntu'
url = "http://h/ubuntu.img"
`},
			image:    "vms/ubuntu:24.04",
			wantURL:  "http://h/ubuntu.img",
			wantFile: "a.toml",
		},
		{
			name: "named groups, braces and $$",
			files: map[string]string{"a.toml": `
[[translations]]
regexp = '^(?P<distro>[a-z]+):(?P<version>[0-9.]+)$'
url = "https://h/${distro}/${version}_disk.img?x=$$"
`},
			image:    "debian:12",
			wantURL:  "https://h/debian/12_disk.img?x=$",
			wantFile: "a.toml",
		},
		{
			name: "other files are ignored",
			files: map[string]string{
				"a.json":        `{"translations": [{"name": "cirros", "url": "http://json/"}]}`,
				"a.toml.bak":    "[[translations]]\nname = \"cirros\"\nurl = \"http://bak/\"\n",
				".hidden.toml":  "[[translations]]\nname = \"cirros\"\nurl = \"http://hidden/\"\n",
				"z.toml":        "[[translations]]\nname = \"cirros\"\nurl = \"http://z/\"\n",
				"README":        "not rules",
				"a.toml.swp":    "garbage",
				"a.yaml~":       "garbage",
				"config.TOML.x": "garbage",
			},
			image:    "cirros",
			wantURL:  "http://z/",
			wantFile: "z.toml",
		},
		{
			name:  "no rules at all",
			files: map[string]string{},
			image: "cirros",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			tr := New(dir, discardLogger())
			m, err := tr.Translate(tt.image)
			src := m.Source
			if tt.wantURL == "" {
				if err != nil || m.Matched {
					t.Fatalf("Translate(%q) = %+v, %v; want no match", tt.image, m, err)
				}
				if tr.Matches(tt.image) {
					t.Errorf("Matches(%q) = true, want false", tt.image)
				}
				return
			}
			if err != nil || !m.Matched {
				t.Fatalf("Translate(%q) = %+v, %v", tt.image, m, err)
			}
			want := Source{
				Name:      tt.image,
				Digest:    tt.wantDig,
				URL:       tt.wantURL,
				Transport: tt.wantTrans,
				RuleFile:  filepath.Join(dir, tt.wantFile),
			}
			if !reflect.DeepEqual(src, want) {
				t.Errorf("Translate(%q) =\n  %+v\nwant\n  %+v", tt.image, src, want)
			}
			if !tr.Matches(tt.image) {
				t.Errorf("Matches(%q) = false, want true", tt.image)
			}
		})
	}
}

func TestTranslateErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.toml": `
[[translations]]
regexp = '^raw/(.*)$'
url = "http://$1/disk.img"
`})
	tr := New(dir, discardLogger())
	tests := []struct {
		name        string
		image       string
		wantClass   error
		wantMatches bool
	}{
		{name: "empty name", image: "", wantClass: errdefs.ErrInvalidArgument},
		{name: "expands to a URL with a bad host", image: "raw/a b", wantClass: errdefs.ErrInvalidArgument, wantMatches: true},
		{name: "expands to a URL without host", image: "raw/", wantClass: errdefs.ErrInvalidArgument, wantMatches: true},
		{name: "no match is not an error", image: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tr.Translate(tt.image)
			if !errors.Is(err, tt.wantClass) { // nil: no error
				t.Errorf("Translate(%q) error = %v, want class %v", tt.image, err, tt.wantClass)
			}
			if m.Matched {
				t.Errorf("Translate(%q) = %+v, want no match", tt.image, m)
			}
			if got := tr.Matches(tt.image); got != tt.wantMatches {
				t.Errorf("Matches(%q) = %v, want %v", tt.image, got, tt.wantMatches)
			}
		})
	}
}

func TestNoMatchMessage(t *testing.T) {
	t.Run("message names the default directory", func(t *testing.T) {
		if _, err := os.Stat(DefaultDir); err == nil {
			t.Skipf("%s exists on this machine", DefaultDir)
		}
		m, err := New("", discardLogger()).Translate("foo")
		want := `no image translation rule matches "foo"; add a [[translations]] rule to a .toml or .yaml file in /etc/vmpod/images.d (the directory does not exist)`
		if err != nil || m.Matched || m.NoMatch != want {
			t.Errorf("Translate = %+v, %v\nwant message %s", m, err, want)
		}
	})
	t.Run("no match is an answer, not an error", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"a.toml": cirrosTOML})
		m, err := New(dir, discardLogger()).Translate("foo")
		want := fmt.Sprintf(`no image translation rule matches "foo"; add a [[translations]] rule to a .toml or .yaml file in %s`, dir)
		if err != nil {
			t.Errorf("error = %v, want none", err)
		}
		if m.Matched || !reflect.DeepEqual(m.Source, Source{}) || m.NoMatch != want {
			t.Errorf("Translate = %+v\nwant message %s", m, want)
		}
		if hit, err := New(dir, discardLogger()).Translate("cirros"); err != nil || !hit.Matched || hit.NoMatch != "" {
			t.Errorf("Translate(cirros) = %+v, %v; want a match without message", hit, err)
		}
	})
	t.Run("message mentions broken files", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{
			"a.toml": cirrosTOML,
			"b.toml": "[[translations]]\nname = \"foo\"\n",
		})
		m, err := New(dir, discardLogger()).Translate("foo")
		if err != nil || m.Matched {
			t.Fatalf("Translate = %+v, %v; want no match", m, err)
		}
		for _, want := range []string{filepath.Join(dir, "b.toml"), "url is missing", "1 file(s)"} {
			if !strings.Contains(m.NoMatch, want) {
				t.Errorf("message %q does not mention %q", m.NoMatch, want)
			}
		}
	})
	t.Run("unreadable directory", func(t *testing.T) {
		// A file where the directory should be: ReadDir fails without root
		// privileges mattering.
		dir := filepath.Join(t.TempDir(), "images.d")
		if err := os.WriteFile(dir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		tr := New(dir, discardLogger())
		m, err := tr.Translate("foo")
		if err != nil || m.Matched || !strings.Contains(m.NoMatch, "cannot be read") {
			t.Errorf("Translate = %+v, %v; want no match saying the directory cannot be read", m, err)
		}
		if p := tr.Problems(); len(p) != 1 {
			t.Errorf("Problems() = %v, want one", p)
		}
	})
}

func TestDuplicateNameWarns(t *testing.T) {
	var logs bytes.Buffer
	dir := writeFiles(t, map[string]string{
		"a.toml": "[[translations]]\nname = \"x\"\nurl = \"http://a/x\"\n",
		"b.toml": "[[translations]]\nname = \"x\"\nurl = \"http://b/x\"\n",
	})
	tr := New(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if m, err := tr.Translate("x"); err != nil || m.Source.URL != "http://a/x" {
		t.Errorf("Translate(x) = %+v, %v; want the rule of a.toml", m, err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), filepath.Join(dir, "b.toml")) {
		t.Errorf("no warning about the rule of b.toml:\n%s", logs.String())
	}
}
