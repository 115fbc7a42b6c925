package httppull

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// FuzzCredentialFiles reads a transport's bearer_token_file or
// basic_auth_file with fuzzed content and a fuzzed rule URL (user info
// included) and checks: a refused file or URL is FailedPrecondition or
// InvalidArgument and its error shows none of the file's content or the
// URL's password; an accepted one gives exactly one Authorization
// header, "Bearer <the trimmed token>" or "Basic base64(user:password)"
// as the file or URL says, and a URL without user info.
func FuzzCredentialFiles(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "secret")
	f.Add("  t0ken-Secret-1\n", false, "https://h.example/disk.qcow2")
	f.Add("alice:Passw0rd-Secret\n", true, "https://h.example/disk.qcow2")
	f.Add("alice:pw\r\nmore", true, "https://h.example/x")
	f.Add("no colon here", true, "https://h.example/x")
	f.Add("tok\x00en", false, "https://h.example/x")
	f.Add("", false, "https://h.example/x")
	f.Add("tok", false, "https://u:Url-Passw0rd@h.example/x")
	f.Add("tok", false, "https://u:Url-Passw0rd@h.example/%zz")
	f.Fuzz(func(t *testing.T, content string, basic bool, rawURL string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tr := imagetranslation.Transport{Name: "t"}
		if basic {
			tr.BasicAuthFile = path
		} else {
			tr.BearerTokenFile = path
		}
		src := imagetranslation.Source{Name: "x", URL: rawURL, Transport: tr, RuleFile: "/etc/vmpod/images.d/r.toml"}
		u, h, err := credentials(src, nil)
		if err != nil {
			if !errdefs.IsFailedPrecondition(err) && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("credentials: %v is neither FailedPrecondition nor InvalidArgument", err)
			}
			msg := err.Error()
			secrets := strings.FieldsFunc(content, func(r rune) bool { return r == ':' || r == '\n' || r == '\r' || r == ' ' })
			if pu, err := url.Parse(rawURL); err == nil {
				if pw, ok := pu.User.Password(); ok {
					secrets = append(secrets, pw)
				}
			}
			for _, part := range secrets {
				if len(part) >= 8 && strings.Contains(msg, part) && !strings.Contains(path+src.RuleFile+imagetranslation.RedactURL(rawURL), part) {
					t.Fatalf("the error shows the secret %q: %s", part, msg)
				}
			}
			return
		}
		if u.User != nil {
			t.Fatalf("the request URL %s keeps user info", u.Redacted())
		}
		auth := h.Values("Authorization")
		if len(auth) != 1 {
			t.Fatalf("%d Authorization headers", len(auth))
		}
		trimmed := bytes.TrimSpace([]byte(content))
		switch {
		case basic:
			user, pass, _ := strings.Cut(string(trimmed), ":")
			if auth[0] != "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) || strings.ContainsAny(string(trimmed), "\r\n") {
				t.Fatalf("basic_auth_file %q gave %q", content, auth[0])
			}
		case auth[0] != "Bearer "+string(trimmed) || strings.ContainsAny(string(trimmed), "\r\n\x00"):
			t.Fatalf("bearer_token_file %q gave %q", content, auth[0])
		}
	})
}
