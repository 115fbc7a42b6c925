package image

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// closeDelimited serves files as HTTP/1.1 answers without Content-Length,
// ending each body by closing the connection; cut removes bytes from the
// end of a file, as a connection lost in the middle would.
func closeDelimited(t *testing.T, files map[string][]byte, cut map[string]int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		body = body[:len(body)-cut[r.URL.Path]]
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
		buf.Write(body)
		buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestCloseDelimitedDownloads: a body without length that the server
// ends by closing the connection is kept only when it proves whole: a
// qcow2 complete by its own tables, or any file matching a pinned digest.
// Before, a truncated qcow2 was stored (qemu-img info accepts it).
func TestCloseDelimitedDownloads(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	q, _ := os.ReadFile(makeQcow2(t, dir, "d.qcow2"))
	raw := make([]byte, 1<<20)
	for i := range raw {
		raw[i] = byte(i % 251)
	}
	srv := closeDelimited(t, map[string][]byte{"/whole.qcow2": q, "/cut.qcow2": q, "/d.raw": raw}, map[string]int{"/cut.qcow2": 70000})
	s, _ := newStore(t, mapTranslator{"whole": srv.URL + "/whole.qcow2", "cut": srv.URL + "/cut.qcow2", "raw": srv.URL + "/d.raw"})
	s.opts.Checker = testChecker()
	ctx := context.Background()
	if _, err := s.Pull(ctx, "whole", nil); err != nil {
		t.Fatalf("complete qcow2: %v", err)
	}
	for _, tc := range []struct {
		name  string
		class error
		want  string
	}{
		{"cut", errdefs.ErrUnavailable, "download truncated"},
		{"raw", errdefs.ErrInvalidArgument, "pins its digest"},
	} {
		_, err := s.Pull(ctx, tc.name, nil)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pull %s: %v; want %v saying %q", tc.name, err, tc.class, tc.want)
		}
	}
	if _, err := s.Pull(ctx, "raw@"+sha(raw), nil); err != nil {
		t.Errorf("pinned raw: %v", err)
	}
	if n := len(s.List()); n != 2 || len(tmpEntries(t, s)) != 0 {
		t.Errorf("%d images, temp files %v; want the whole qcow2 and the pinned raw image", n, tmpEntries(t, s))
	}
}
