package imagetranslation

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestTranslateTransportKeys(t *testing.T) {
	const toml = `
[[translations]]
name = "x"
url = "https://h/x"
transport = "full"

[transports.full]
timeout = "1h30m"
ca_file = "certs/ca.pem"
client_cert_file = "/abs/client.pem"
client_key_file = "client.key"
insecure_skip_verify = true
proxy = "http://proxy.example:3128"
`
	const yaml = `
translations:
- name: x
  url: https://h/x
  transport: full
transports:
  full:
    timeout: 1h30m
    ca_file: certs/ca.pem
    client_cert_file: /abs/client.pem
    client_key_file: client.key
    insecure_skip_verify: true
    proxy: http://proxy.example:3128
`
	for _, tt := range []struct{ file, content string }{{"t.toml", toml}, {"t.yaml", yaml}} {
		t.Run(tt.file, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{tt.file: tt.content})
			m, err := New(dir, discardLogger()).Translate("x")
			if err != nil || !m.Matched {
				t.Fatal(m, err)
			}
			src := m.Source
			want := Transport{
				Name:               "full",
				Timeout:            90 * time.Minute,
				CAFile:             filepath.Join(dir, "certs/ca.pem"), // relative to the file
				ClientCertFile:     "/abs/client.pem",
				ClientKeyFile:      filepath.Join(dir, "client.key"),
				InsecureSkipVerify: true,
				Proxy:              "http://proxy.example:3128",
			}
			if !reflect.DeepEqual(src.Transport, want) {
				t.Errorf("transport = %+v, want %+v", src.Transport, want)
			}
		})
	}
}

func TestBadFilesSkipped(t *testing.T) {
	const good = "[[translations]]\nname = \"good\"\nurl = \"http://h/good\"\n"
	tests := []struct {
		name    string
		file    string
		content string
		wantErr string // in the error of the file
	}{
		{"unknown key toml", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"http://h/bad\"\nnmae = \"x\"\n", `line 4, column 1: unknown key "translations.nmae"`},
		{"unknown transport key toml", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"http://h/bad\"\n[transports.x]\ntimout = \"1m\"\n", `unknown key "transports.x.timout"`},
		{"unknown top-level key toml", "bad.toml", "[[translation]]\nname = \"bad\"\nurl = \"http://h/bad\"\n", `unknown key "translation`},
		{"unknown key yaml", "bad.yaml", "translations:\n- name: bad\n  url: http://h/bad\n  nmae: x\n", `unknown field "nmae"`},
		{"toml syntax", "bad.toml", "[[translations]]\nname = \"bad\nurl = \"http://h/bad\"\n", "line 2"},
		{"yaml syntax", "bad.yml", "translations:\n- name: bad\n url: [\n", "yaml"},
		{"both name and regexp", "bad.toml", "[[translations]]\nname = \"bad\"\nregexp = 'bad'\nurl = \"http://h/bad\"\n", "translations[0]: both name and regexp are set"},
		{"neither name nor regexp", "bad.yaml", "translations:\n- url: http://h/bad\n", "translations[0]: neither name nor regexp is set"},
		{"missing url", "bad.toml", good + "[[translations]]\nname = \"bad\"\n", "translations[1]: url is missing"},
		{"bad scheme", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"ftp://h/bad\"\n", "scheme must be http or https"},
		{"file url", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"file:///var/lib/bad.img\"\n", "scheme must be http or https"},
		{"relative url", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"/bad.img\"\n", "scheme must be http or https"},
		{"bad scheme in regexp url", "bad.toml", "[[translations]]\nregexp = '(.*)'\nurl = \"$1\"\n", "scheme must be http or https"},
		{"bad regexp", "bad.toml", "[[translations]]\nregexp = '(bad'\nurl = \"http://h/bad\"\n", `regexp "(bad": error parsing regexp`},
		{"url refers to a missing group", "bad.toml", "[[translations]]\nregexp = '^(bad)$'\nurl = \"http://h/$2\"\n", "url refers to $2"},
		{"url refers to a group named 1_disk", "bad.toml", "[[translations]]\nregexp = '^(bad)$'\nurl = \"http://h/$1_disk.img\"\n", "url refers to $1_disk"},
		{"url refers to a missing named group", "bad.toml", "[[translations]]\nregexp = '^(?P<n>bad)$'\nurl = \"http://h/${name}\"\n", "url refers to $name"},
		{"unknown transport", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"http://h/bad\"\ntransport = \"nope\"\n", `transport "nope" is not defined in this file`},
		{"transport of another file", "z.toml", "[[translations]]\nname = \"bad\"\nurl = \"http://h/bad\"\ntransport = \"fromgood\"\n", `transport "fromgood" is not defined in this file`},
		{"bad timeout", "bad.toml", "[[translations]]\nname = \"bad\"\nurl = \"http://h/bad\"\ntransport = \"t\"\n[transports.t]\ntimeout = \"10\"\n", `transports.t: timeout "10" is not a duration`},
		{"timeout of wrong type", "bad.toml", "[transports.t]\ntimeout = 10\n", "line 2"},
		{"negative timeout", "bad.yaml", "transports:\n  t:\n    timeout: -1s\n", "timeout -1s is negative"},
		{"cert without key", "bad.toml", "[transports.t]\nclient_cert_file = \"c.pem\"\n", "client_cert_file and client_key_file must be set together"},
		{"bad proxy", "bad.toml", "[transports.t]\nproxy = \"ftp://p\"\n", `proxy "ftp://p": scheme must be`},
		{"yaml boolean name", "bad.yaml", "translations:\n- name: yes\n  url: http://h/bad\n", "translations[0].name: YAML reads the value as the boolean true"},
		{"yaml number name", "bad.yaml", "translations:\n- name: 22.10\n  url: http://h/bad\n", "translations[0].name: YAML reads the value as the number 22.1"},
		{"yaml number timeout", "bad.yaml", "transports:\n  t:\n    timeout: 10\n", `timeout "10" is not a duration`},
		{"several yaml documents", "bad.yaml", "translations:\n- name: bad\n  url: http://h/bad\n---\ntranslations:\n- name: bad2\n  url: http://h/bad\n", "holds 2 YAML documents"},
		{"name with digest", "bad.toml", "[[translations]]\nname = \"bad@" + digest + "\"\nurl = \"http://h/bad\"\n", "carries a digest"},
		{"name with empty tag", "bad.toml", "[[translations]]\nname = \"bad:\"\nurl = \"http://h/bad\"\n", "ends in ':'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			goodFile := good + "transport = \"fromgood\"\n[transports.fromgood]\n"
			dir := writeFiles(t, map[string]string{"good.toml": goodFile, tt.file: tt.content})
			badPath := filepath.Join(dir, tt.file)

			tr := New(dir, log)
			if m, err := tr.Translate("good"); err != nil || m.Source.URL != "http://h/good" {
				t.Errorf("Translate(good) = %+v, %v; want the rule of the good file", m, err)
			}
			if got, want := tr.Files(), []string{filepath.Join(dir, "good.toml")}; !slices.Equal(got, want) {
				t.Errorf("Files() = %v, want %v", got, want)
			}
			problems := tr.Problems()
			if len(problems) != 1 || !strings.Contains(problems[0].Error(), badPath) || !strings.Contains(problems[0].Error(), tt.wantErr) {
				t.Errorf("Problems() = %v, want one naming %s and containing %q", problems, badPath, tt.wantErr)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "file="+badPath) {
				t.Errorf("log does not have an error naming %s:\n%s", badPath, logs.String())
			}
			m, err := tr.Translate("bad")
			if err != nil || m.Matched || !strings.Contains(m.NoMatch, badPath) {
				t.Errorf("Translate(bad) = %+v, %v; want no match naming %s", m, err, badPath)
			}

			_, err = LoadFile(badPath)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadFile error = %v, want InvalidArgument containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.toml": cirrosTOML, "a.json": "{}"})
	t.Run("rules in order", func(t *testing.T) {
		rules, err := LoadFile(filepath.Join(dir, "a.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 2 || rules[0].Name != "cirros" || rules[1].Regexp.String() != "^vms/(.+)$" || rules[1].Index != 1 {
			t.Errorf("rules = %+v", rules)
		}
		if got, want := rules[1].String(), filepath.Join(dir, "a.toml")+" translations[1]"; got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadFile(filepath.Join(dir, "missing.toml"))
		if !errdefs.IsFailedPrecondition(err) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error = %v, want FailedPrecondition wrapping ErrNotExist", err)
		}
	})
	t.Run("other extension", func(t *testing.T) {
		_, err := LoadFile(filepath.Join(dir, "a.json"))
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("error = %v, want InvalidArgument", err)
		}
	})
}
