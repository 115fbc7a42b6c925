package httppull

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

func testOptions(t *testing.T) Options {
	return Options{TmpDir: t.TempDir(), ProgressInterval: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func source(url string) imagetranslation.Source {
	return imagetranslation.Source{Name: "img", URL: url, RuleFile: "/etc/vmpod/images.d/test.toml"}
}

func tmpFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPull(t *testing.T) {
	body := bytes.Repeat([]byte("disk"), 100000)
	var ifNoneMatch, ifModifiedSince, userAgent string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ifNoneMatch, ifModifiedSince, userAgent = r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since"), r.Header.Get("User-Agent")
		if ifNoneMatch == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		w.Write(body)
	}))
	defer srv.Close()
	opts := testOptions(t)
	var downloaded []int64
	started := 0
	opts.Downloaded = func(n int64) { downloaded = append(downloaded, n) }
	opts.Started = func() { started++ }

	res, err := Pull(context.Background(), source(srv.URL+"/d.img"), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if res.NotModified || res.Digest != "sha256:"+hex.EncodeToString(sum[:]) || res.Size != int64(len(body)) {
		t.Fatalf("result = %+v", res)
	}
	if want := (Validators{ETag: `"v1"`, LastModified: "Mon, 02 Jan 2006 15:04:05 GMT"}); res.Validators != want {
		t.Errorf("validators = %+v, want %+v", res.Validators, want)
	}
	if got, err := os.ReadFile(res.TmpFile); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("file: %d bytes, %v", len(got), err)
	}
	if ifNoneMatch != "" || ifModifiedSince != "" || userAgent != "vmpod" {
		t.Errorf("request headers: If-None-Match %q, If-Modified-Since %q, User-Agent %q", ifNoneMatch, ifModifiedSince, userAgent)
	}
	os.Remove(res.TmpFile)

	// Conditional: the server says nothing changed.
	res, err = Pull(context.Background(), source(srv.URL+"/d.img"), &res.Validators, opts)
	if err != nil || !res.NotModified || res.TmpFile != "" {
		t.Fatalf("conditional pull = %+v, %v; want NotModified", res, err)
	}
	if ifNoneMatch != `"v1"` || ifModifiedSince != "Mon, 02 Jan 2006 15:04:05 GMT" {
		t.Errorf("conditional request headers: If-None-Match %q, If-Modified-Since %q", ifNoneMatch, ifModifiedSince)
	}
	if started != 1 || len(downloaded) != 1 || downloaded[0] != int64(len(body)) {
		t.Errorf("started %d, downloaded %v; want one download of %d bytes", started, downloaded, len(body))
	}
	if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
}

func TestPullErrors(t *testing.T) {
	mux := http.NewServeMux()
	for path, code := range map[string]int{"/gone": http.StatusGone, "/unauthorized": http.StatusUnauthorized,
		"/teapot": http.StatusTeapot, "/unavailable": http.StatusServiceUnavailable, "/not-modified": http.StatusNotModified} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
	}
	mux.HandleFunc("/ftp", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "ftp://files.example/disk.img", http.StatusFound)
	})
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "short")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	plainAsHTTPS := "https://" + strings.TrimPrefix(srv.URL, "http://")

	for _, tc := range []struct {
		name  string
		src   imagetranslation.Source
		class error
		want  []string
	}{
		{"missing", source(srv.URL + "/missing"), errdefs.ErrNotFound, []string{"404 Not Found", "fix the url of the rule in /etc/vmpod/images.d/test.toml"}},
		{"gone", source(srv.URL + "/gone"), errdefs.ErrNotFound, []string{"410 Gone"}},
		{"unauthorized", source(srv.URL + "/unauthorized"), errdefs.ErrPermissionDenied, []string{"401 Unauthorized", "refuses vmpod"}},
		{"server error", source(srv.URL + "/unavailable"), errdefs.ErrUnavailable, []string{"503 Service Unavailable", "retry later"}},
		{"other status", source(srv.URL + "/teapot"), errdefs.ErrInvalidArgument, []string{"418 I'm a teapot", "expected 200 OK"}},
		{"unasked 304", source(srv.URL + "/not-modified"), errdefs.ErrInvalidArgument, []string{"304 Not Modified", "expected 200 OK"}},
		{"truncated", source(srv.URL + "/truncated"), errdefs.ErrUnavailable, []string{"download truncated", "of 1000 bytes", "retry the pull"}},
		{"TLS verification", source(tlsSrv.URL + "/x"), errdefs.ErrInvalidArgument, []string{"TLS verification of", "set ca_file (or insecure_skip_verify)"}},
		{"https to a plain-HTTP server", source(plainAsHTTPS + "/x"), errdefs.ErrUnavailable, []string{"server gave HTTP response to HTTPS client", "check that the server is reachable"}},
		{"refused", source("http://127.0.0.1:1/x"), errdefs.ErrUnavailable, []string{"check that the server is reachable"}},
		{"redirect to ftp", source(srv.URL + "/ftp"), errdefs.ErrFailedPrecondition, []string{"redirect to a scheme other than http or https", "ftp://files.example/disk.img"}},
		{"bad url", source("http://h/\x7f"), errdefs.ErrInvalidArgument, []string{"bad url", "test.toml"}},
		{"transport", imagetranslation.Source{URL: srv.URL, RuleFile: "r.toml", Transport: imagetranslation.Transport{Name: "t", CAFile: "/nonexistent/ca.pem"}},
			errdefs.ErrFailedPrecondition, []string{`transport "t" of rule in r.toml`, "read ca_file /nonexistent/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(t)
			_, err := Pull(context.Background(), tc.src, nil, opts)
			if !errors.Is(err, tc.class) {
				t.Fatalf("err = %v; want class %v", err, tc.class)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to say %q", err, w)
				}
			}
			if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
				t.Errorf("files left: %v", left)
			}
		})
	}
}

func TestPullTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	src := source(srv.URL)
	src.Transport = imagetranslation.Transport{Timeout: 100 * time.Millisecond}
	_, err := Pull(context.Background(), src, nil, testOptions(t))
	// net/http's client timeout also matches context.DeadlineExceeded; it
	// must reach users as Unavailable, as README.md's table says, and not
	// as DeadlineExceeded (which the gRPC boundary checks first).
	if err == nil || !strings.Contains(err.Error(), "timed out") || !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want the client's timeout as Unavailable", err)
	}
}

func TestPullCancelRemovesFile(t *testing.T) {
	sent := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(1<<30))
		w.Write(make([]byte, 1<<20))
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done()
	}))
	defer srv.Close()
	opts := testOptions(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := Pull(ctx, source(srv.URL), nil, opts); done <- err }()
	<-sent
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
}
