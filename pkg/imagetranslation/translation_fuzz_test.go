package imagetranslation

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"
)

// FuzzParseFile decodes and validates a rules file, TOML or YAML, and
// checks:
//   - a refused file gives InvalidArgument, and its error shows no secret
//     of the file (a URL's password or query string, a header value) that
//     the file does not also hold somewhere a message may name;
//   - every accepted rule has exactly one of name and regexp, an http(s)
//     URL with a host (for a regexp rule, with every $ reference naming a
//     group), a transport that validates, and its place in the file.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(`
[[translations]]
name = "cirros:0.6.2"
url = "https://user:S3cretPassw0rd@images.example.com/cirros.qcow2?sig=S1gnatureValue"
transport = "t"

[[translations]]
regexp = '^vms/(?P<name>[a-z]+):(\d+)$'
url = "https://images.example.com/${name}-$2.qcow2"

[transports.t]
timeout = "90s"
headers = { X-Api-Key = "Header5ecretValue" }
proxy = "socks5h://proxy.example:1080"
`), false)
	f.Add([]byte(`
translations:
- name: debian
  url: http://mirror.example/debian.qcow2
  transport: full
- regexp: ^(.*)$
  url: https://h/$1x
transports:
  full:
    basic_auth_file: auth
    ca_file: ca.pem
    headers: {X-Token: "Header5ecretValue", "Bad Name": x}
    insecure_skip_verify: yes
    timeout: 0755
`), true)
	f.Add([]byte("translations: []\n---\nb: 2\n"), true)
	f.Add([]byte("[[translations]]\nname = \"x@sha256:00\"\nurl = \"https://h/\"\n[[translations]]\nname = \"y\"\nurl = \"ftp://user:S3cretPassw0rd@h/\"\n"), false)
	f.Add([]byte("[transports.p]\nproxy = \"http://u:S3cretPassw0rd@[::1\"\nclient_cert_file = \"c\"\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, isYAML bool) {
		path := "/etc/vmpod/images.d/rules.toml"
		if isYAML {
			path = "/etc/vmpod/images.d/rules.yaml"
		}
		rules, err := parseFile(path, data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("refused with %v, not InvalidArgument", err)
			}
			checkNoSecrets(t, data, isYAML, err.Error())
			return
		}
		for i, r := range rules {
			if (r.Name == "") == (r.Regexp == nil) {
				t.Fatalf("rule %d has name %q and regexp %v", i, r.Name, r.Regexp)
			}
			if r.File != path || (i > 0 && r.Index <= rules[i-1].Index) {
				t.Fatalf("rule %d is %s", i, r)
			}
			probe := r.URL
			if r.Regexp != nil {
				probe = expandAll(r.Regexp, r.URL)
			}
			if u, err := url.Parse(probe); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("rule %d: url %q (as %q) accepted: %v", i, r.URL, probe, err)
			}
			if err := r.Transport.Validate(); err != nil {
				t.Fatalf("rule %d: transport accepted but %v", i, err)
			}
		}
	})
}

// expandAll expands a URL template with "x" for every group of re, as
// a name matching every group with "x" would.
func expandAll(re *regexp.Regexp, tmpl string) string {
	n := re.NumSubexp() + 1
	src := strings.Repeat("x", n)
	match := make([]int, 2*n)
	for i := range n {
		match[2*i], match[2*i+1] = i, i+1
	}
	return string(re.ExpandString(nil, tmpl, src, match))
}

// checkNoSecrets fails when msg shows a secret of the rules file data:
// the password or query string of a URL, or a header value, of at least
// 8 bytes, unless the file also holds that text outside those fields.
func checkNoSecrets(t *testing.T, data []byte, isYAML bool, msg string) {
	t.Helper()
	var fc fileConfig
	if isYAML {
		if yaml.Unmarshal(data, &fc) != nil {
			return
		}
	} else if toml.Unmarshal(data, &fc) != nil {
		return
	}
	var secrets, fields []string
	addURL := func(s string) {
		fields = append(fields, s)
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
		secrets = append(secrets, u.RawQuery)
	}
	for _, r := range fc.Translations {
		addURL(r.URL)
	}
	for _, tr := range fc.Transports {
		addURL(tr.Proxy)
		for _, v := range tr.Headers {
			secrets, fields = append(secrets, v), append(fields, v)
		}
	}
	for _, s := range secrets {
		if len(s) < 8 || !strings.Contains(msg, s) {
			continue
		}
		inFields := 0
		for _, f := range fields {
			inFields += strings.Count(f, s)
		}
		if strings.Count(string(data), s) <= inFields {
			t.Fatalf("the error shows the secret %q: %s", s, msg)
		}
	}
}

// FuzzRedactURL checks that RedactURL keeps nothing secret: what it
// returns parses, with no password, "redacted" for any user info and
// query string, no fragment, and the same scheme, host and path.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x?sig=1#frag", "http://h/p?", "https://h/a%2Fb?q=%zz", "//u@h", "h:80/x", "https://[::1]:443/x?a=b#c", "\x7f", "mailto:u:p@h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		red := RedactURL(s)
		orig, err := url.Parse(s)
		if err != nil {
			if red != "(unparsable URL)" || !HasSecrets(s) {
				t.Fatalf("unparsable %q redacted as %q", s, red)
			}
			return
		}
		u, err := url.Parse(red)
		if err != nil {
			t.Fatalf("RedactURL(%q) = %q does not parse: %v", s, red, err)
		}
		if _, hasPass := u.User.Password(); hasPass || u.User != nil && u.User.Username() != "redacted" {
			t.Fatalf("RedactURL(%q) = %q keeps user info", s, red)
		}
		if u.RawQuery != "" && u.RawQuery != "redacted" || u.Fragment != "" {
			t.Fatalf("RedactURL(%q) = %q keeps a query or fragment", s, red)
		}
		if (orig.User != nil || orig.RawQuery != "" || orig.ForceQuery) != HasSecrets(s) {
			t.Fatalf("HasSecrets(%q) = %v", s, HasSecrets(s))
		}
		if u.Scheme != orig.Scheme || u.Host != orig.Host || u.EscapedPath() != orig.EscapedPath() {
			t.Fatalf("RedactURL(%q) = %q changes the scheme, host or path", s, red)
		}
	})
}

// FuzzTranslate translates a tenant's image name with fixed rules and
// checks: a refused name is InvalidArgument; a translated one has an
// http(s) URL with a host, and the rule's own host when the template's
// host holds no $ reference (no name can steer the download elsewhere);
// the digest is the name's @sha256 suffix.
func FuzzTranslate(f *testing.F) {
	dir := f.TempDir()
	const rules = `
[[translations]]
name = "cirros"
url = "https://images.example.com/cirros.qcow2"

[[translations]]
regexp = '^vms/(?P<os>[^:]+):(.+)$'
url = "https://images.example.com/${os}/$2.qcow2"

[[translations]]
regexp = '^mirror/(.*)$'
url = "http://mirror.example:8080/$1?from=vmpod"

[[translations]]
regexp = '^host/([a-z0-9.-]+)/(.*)$'
url = "https://$1/$2"
`
	if err := os.WriteFile(filepath.Join(dir, "rules.toml"), []byte(rules), 0o644); err != nil {
		f.Fatal(err)
	}
	tr := New(dir, discardLogger())
	if p := tr.Problems(); len(p) != 0 {
		f.Fatal(p)
	}
	for _, s := range []string{"cirros", "cirros:1", "cirros@" + digest, "vms/debian:12", "vms/a/../../b:#@evil.com", "mirror/x?y#z",
		"host/evil.com/x", "host/a.b/@c", "nomatch", "", "mirror/\x00", "vms/x:y@sha256:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		m, err := tr.Translate(name)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Translate(%q): %v is not InvalidArgument", name, err)
			}
			return
		}
		if !m.Matched {
			if m.NoMatch == "" || m.Source.URL != "" {
				t.Fatalf("Translate(%q) matched nothing but says %+v", name, m)
			}
			return
		}
		u, err := url.Parse(m.Source.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("Translate(%q) = %q: %v", name, m.Source.URL, err)
		}
		if !strings.HasPrefix(name, "host/") && u.Hostname() != "images.example.com" && u.Host != "mirror.example:8080" {
			t.Fatalf("Translate(%q) = %q: the name steered the host", name, m.Source.URL)
		}
		if d := digestSuffix.FindStringSubmatch(name); (d == nil && m.Source.Digest != "") || (d != nil && m.Source.Digest != d[1]) {
			t.Fatalf("Translate(%q) gave digest %q", name, m.Source.Digest)
		}
	})
}
