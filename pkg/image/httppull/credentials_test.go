package httppull

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// seen records what one test server was sent.
type seen struct {
	mu         sync.Mutex
	auth       []string
	apiKey     []string
	clientCert []bool
}

func (s *seen) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	s.apiKey = append(s.apiKey, r.Header.Get("X-Api-Key"))
	s.clientCert = append(s.clientCert, r.TLS != nil && len(r.TLS.PeerCertificates) > 0)
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCredentialsStayWithTheOrigin: the transport's credentials (bearer
// token, basic auth, headers, user info of the URL) reach the rule's host,
// and never the host a redirect leads to.
func TestCredentialsStayWithTheOrigin(t *testing.T) {
	var other, origin seen
	otherSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.record(r)
		io.WriteString(w, "disk from elsewhere")
	}))
	defer otherSrv.Close()
	// Another host: the test servers differ by port, which is part of the
	// origin.
	originSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin.record(r)
		if r.URL.Path == "/away" {
			http.Redirect(w, r, otherSrv.URL+"/disk", http.StatusFound)
			return
		}
		if r.URL.Path == "/here" {
			http.Redirect(w, r, "/disk", http.StatusFound)
			return
		}
		io.WriteString(w, "disk")
	}))
	defer originSrv.Close()

	withUser := func(u string) string { return strings.Replace(u, "http://", "http://alice:s3cret@", 1) }
	for _, tc := range []struct {
		name     string
		tr       imagetranslation.Transport
		url      func(string) string
		wantAuth string
		wantKey  string
	}{
		{"bearer token file", imagetranslation.Transport{BearerTokenFile: secretFile(t, "tok3n\n")}, nil, "Bearer tok3n", ""},
		{"basic auth file", imagetranslation.Transport{BasicAuthFile: secretFile(t, "alice:s3cret\n")}, nil, basic("alice", "s3cret"), ""},
		{"user info in the url", imagetranslation.Transport{}, withUser, basic("alice", "s3cret"), ""},
		{"headers", imagetranslation.Transport{Headers: map[string]string{"x-api-key": "k3y"}}, nil, "", "k3y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/here", "/away"} {
				origin, other = seen{}, seen{}
				u := originSrv.URL + path
				if tc.url != nil {
					u = tc.url(u)
				}
				src := source(u)
				src.Transport = tc.tr
				res, err := Pull(context.Background(), src, nil, testOptions(t))
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				os.Remove(res.TmpFile)
				// Both requests to the origin (the redirect, then the disk
				// for /here) carry the credentials.
				for i := range origin.auth {
					if origin.auth[i] != tc.wantAuth || origin.apiKey[i] != tc.wantKey {
						t.Errorf("%s: origin request %d got Authorization %q, X-Api-Key %q", path, i, origin.auth[i], origin.apiKey[i])
					}
				}
				for i := range other.auth {
					if other.auth[i] != "" || other.apiKey[i] != "" {
						t.Errorf("%s: the redirect target got Authorization %q, X-Api-Key %q", path, other.auth[i], other.apiKey[i])
					}
				}
				if path == "/away" && len(other.auth) != 1 {
					t.Errorf("redirect target asked %d times", len(other.auth))
				}
			}
		})
	}
}

func TestSameOrigin(t *testing.T) {
	parse := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	origin := parse("https://images.example/disk")
	for target, want := range map[string]bool{
		"https://images.example/other":      true,
		"https://images.example:443/x":      true,
		"http://images.example/x":           false, // downgrade
		"https://cdn.example/x":             false,
		"https://images.example:8443/x":     false,
		"https://images.example.evil.com/x": false,
	} {
		if got := sameOrigin(origin, parse(target)); got != want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", origin, target, got, want)
		}
	}
	if !sameOrigin(parse("http://images.example/d"), parse("https://images.example/d")) {
		t.Error("an upgrade to https of the same host is the same origin")
	}
}

// TestClientCertStaysWithTheOrigin: the client certificate is presented
// to the rule's host, not to a TLS host a redirect leads to.
func TestClientCertStaysWithTheOrigin(t *testing.T) {
	pool, certFile, keyFile := clientPKI(t)
	var other seen
	otherSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.record(r)
		io.WriteString(w, "disk")
	}))
	otherSrv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	otherSrv.StartTLS()
	defer otherSrv.Close()
	originSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherSrv.URL+"/disk", http.StatusFound)
	}))
	originSrv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	originSrv.StartTLS()
	defer originSrv.Close()

	src := source(originSrv.URL + "/disk")
	src.Transport = imagetranslation.Transport{InsecureSkipVerify: true, ClientCertFile: certFile, ClientKeyFile: keyFile}
	res, err := Pull(context.Background(), src, nil, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(res.TmpFile)
	if len(other.clientCert) != 1 || other.clientCert[0] {
		t.Fatalf("redirect target saw a client certificate: %v", other.clientCert)
	}
}

func TestCredentialErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "disk") }))
	defer srv.Close()
	tooBig := secretFile(t, strings.Repeat("x", maxCredentialFile+1))
	for _, tc := range []struct {
		name  string
		url   string
		tr    imagetranslation.Transport
		class error
		want  string
	}{
		{"missing token file", srv.URL, imagetranslation.Transport{Name: "t", BearerTokenFile: "/nonexistent/token"}, errdefs.ErrFailedPrecondition, `transport "t": read bearer_token_file /nonexistent/token`},
		{"empty token file", srv.URL, imagetranslation.Transport{BearerTokenFile: secretFile(t, "\n")}, errdefs.ErrFailedPrecondition, "is empty"},
		{"huge token file", srv.URL, imagetranslation.Transport{BearerTokenFile: tooBig}, errdefs.ErrFailedPrecondition, "larger than"},
		{"basic auth without colon", srv.URL, imagetranslation.Transport{BasicAuthFile: secretFile(t, "s3cret")}, errdefs.ErrFailedPrecondition, `"user:password"`},
		{"user info and a file", strings.Replace(srv.URL, "http://", "http://u:s3cret@", 1), imagetranslation.Transport{BearerTokenFile: secretFile(t, "s3cret")}, errdefs.ErrInvalidArgument, "keep one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := source(tc.url)
			src.Transport = tc.tr
			_, err := Pull(context.Background(), src, nil, testOptions(t))
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("err = %v; want %v mentioning %q and no secret", err, tc.class, tc.want)
			}
		})
	}
}

// TestSecretsNotInErrorsOrLogs: a URL's user info and signed query never
// appear in an error or a log line, whatever goes wrong.
func TestSecretsNotInErrorsOrLogs(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/404":
			http.NotFound(w, r)
		case "/ftp":
			http.Redirect(w, r, "ftp://bob:s3cret@files.example/x?sig=s3cret", http.StatusFound)
		case "/slow":
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("partial"))
		default:
			w.Write([]byte("disk"))
		}
	}))
	defer srv.Close()
	secretURL := func(base, path string) string {
		return strings.Replace(base, "http://", "http://alice:s3cret@", 1) + path + "?X-Amz-Signature=s3cret"
	}
	var logs bytes.Buffer
	opts := testOptions(t)
	opts.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, u := range []string{
		secretURL(srv.URL, "/404"),
		secretURL(srv.URL, "/ftp"),
		secretURL(srv.URL, "/slow"),
		secretURL("http://127.0.0.1:1", "/refused"),
		"http://alice:s3cret@h/\x7f?sig=s3cret",
	} {
		_, err := Pull(context.Background(), source(u), nil, opts)
		if err == nil {
			t.Fatalf("pull of %s succeeded", u)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	res, err := Pull(context.Background(), source(secretURL(srv.URL, "/ok")), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(res.TmpFile)
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows a secret:\n%s", logs.String())
	}
}
