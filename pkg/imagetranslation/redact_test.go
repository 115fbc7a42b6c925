package imagetranslation

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://images.example/disk.qcow2":                       "https://images.example/disk.qcow2",
		"https://user:s3cret@images.example/disk.qcow2":           "https://redacted@images.example/disk.qcow2",
		"https://token@images.example/d":                          "https://redacted@images.example/d",
		"https://bucket.example/d.img?X-Amz-Signature=s3cret&a=b": "https://bucket.example/d.img?redacted",
		"http://h/d?":                         "http://h/d?redacted",
		"http://h/d#frag":                     "http://h/d",
		"http://user:s3cret@h/%zz?key=s3cret": "(unparsable URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if HasSecrets("https://h/d") || !HasSecrets("https://u@h/d") || !HasSecrets("https://h/d?x=1") {
		t.Error("HasSecrets is wrong")
	}
}

// TestSecretsNotLogged: a rule URL with user info and a signed query is
// never logged and never in an error, whether it translates or not.
func TestSecretsNotLogged(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.toml": `
[[translations]]
name = "private"
url = "https://alice:s3cret@images.example/disk.qcow2?sig=s3cret"

[[translations]]
regexp = '^bad/(.*)$'
url = "https://alice:s3cret@images.example/$1?sig=s3cret"
`,
		"b.toml": `
[[translations]]
name = "broken"
url = "ftp://alice:s3cret@images.example/disk.qcow2"

[transports.p]
proxy = "ftp://bob:s3cret@proxy.example"
`,
	})
	var logs bytes.Buffer
	tr := New(dir, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	m, err := tr.Translate("private")
	if err != nil || !m.Matched {
		t.Fatalf("Translate = %+v, %v", m, err)
	}
	if m.Source.URL != "https://alice:s3cret@images.example/disk.qcow2?sig=s3cret" {
		t.Fatalf("the source must keep the real URL for the download, got %q", m.Source.URL)
	}
	_, err = tr.Translate("bad/%zz")
	if err == nil {
		t.Fatal("an expansion to an invalid URL translated")
	}
	var texts []string
	texts = append(texts, logs.String(), err.Error())
	for _, p := range tr.Problems() {
		texts = append(texts, p.Error())
	}
	nm, _ := tr.Translate("nothing")
	texts = append(texts, nm.NoMatch)
	for _, s := range texts {
		if strings.Contains(s, "s3cret") {
			t.Errorf("a secret leaked: %s", s)
		}
	}
	if !strings.Contains(logs.String(), "https://redacted@images.example/disk.qcow2?redacted") {
		t.Errorf("the log lacks the redacted URL:\n%s", logs.String())
	}
}

func TestTransportCredentials(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.toml": `
[[translations]]
name = "a"
url = "https://images.example/a.qcow2"
transport = "auth"

[transports.auth]
bearer_token_file = "secrets/token"
headers = { "X-Api-Key" = "k", "X-Other" = "o" }
`,
		"b.yaml": `
translations:
- name: b
  url: https://images.example/b.qcow2
  transport: basic
transports:
  basic:
    basic_auth_file: /etc/vmpod/basic
    headers:
      X-Api-Version: "2"
`,
	})
	tr := New(dir, discardLogger())
	a, _ := tr.Translate("a")
	want := Transport{Name: "auth", BearerTokenFile: filepath.Join(dir, "secrets/token"), Headers: map[string]string{"X-Api-Key": "k", "X-Other": "o"}}
	if !reflect.DeepEqual(a.Source.Transport, want) {
		t.Errorf("transport auth = %+v, want %+v", a.Source.Transport, want)
	}
	b, _ := tr.Translate("b")
	want = Transport{Name: "basic", BasicAuthFile: "/etc/vmpod/basic", Headers: map[string]string{"X-Api-Version": "2"}}
	if !reflect.DeepEqual(b.Source.Transport, want) {
		t.Errorf("transport basic = %+v, want %+v", b.Source.Transport, want)
	}
	if p := tr.Problems(); len(p) != 0 {
		t.Errorf("problems: %v", p)
	}

	for _, tc := range []struct {
		name string
		tr   Transport
		want string
	}{
		{"both files", Transport{BearerTokenFile: "/a", BasicAuthFile: "/b"}, "both set"},
		{"authorization and a file", Transport{BearerTokenFile: "/a", Headers: map[string]string{"authorization": "x"}}, "Authorization"},
		{"managed header", Transport{Headers: map[string]string{"Host": "evil"}}, "managed by vmpod"},
		{"bad name", Transport{Headers: map[string]string{"X Bad": "x"}}, "not a valid header name"},
		{"line break", Transport{Headers: map[string]string{"X-A": "s3cret\r\nX-B: y"}}, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.tr.Validate()
			if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("Validate = %v, want InvalidArgument mentioning %q (and no secret)", err, tc.want)
			}
		})
	}

	bad := writeFiles(t, map[string]string{"c.yaml": `
translations:
- name: c
  url: https://images.example/c.qcow2
  transport: t
transports:
  t:
    headers:
      X-Version: 2
`})
	if p := New(bad, discardLogger()).Problems(); len(p) != 1 || !strings.Contains(p[0].Error(), "transports.t.headers.X-Version") {
		t.Errorf("problems = %v, want one naming transports.t.headers.X-Version", p)
	}
}
