package httppull

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// hijacked serves raw HTTP/1.0-style answers: headers, then body, then the
// connection is closed (a close-delimited body when no length is given).
func hijacked(t *testing.T, head string, body []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString(head + "\r\n\r\n")
		buf.Write(body)
		buf.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPullCloseDelimited(t *testing.T) {
	body := bytes.Repeat([]byte("disk"), 1000)
	for _, tc := range []struct {
		name string
		srv  *httptest.Server
		want bool
	}{
		{"no length, closed", hijacked(t, "HTTP/1.1 200 OK\r\nConnection: close", body), true},
		{"content length", hijacked(t, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d", len(body)), body), false},
		{"chunked", httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body[:100])
			w.(http.Flusher).Flush() // no length known yet: chunked
			w.Write(body[100:])
		})), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.srv.Close()
			res, err := Pull(context.Background(), source(tc.srv.URL), nil, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(res.TmpFile)
			if res.CloseDelimited != tc.want || res.Size != int64(len(body)) {
				t.Fatalf("CloseDelimited = %v, size %d; want %v, %d", res.CloseDelimited, res.Size, tc.want, len(body))
			}
		})
	}
}

// TestPullSizeLimit: a Content-Length above max_image_size is refused
// before the body is read; a body without length is cut at the limit.
func TestPullSizeLimit(t *testing.T) {
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/announced" {
			w.Header().Set("Content-Length", fmt.Sprint(10<<20))
		}
		chunk := bytes.Repeat([]byte{7}, 64<<10)
		for range 160 {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, path := range []string{"/announced", "/streamed"} {
		t.Run(path, func(t *testing.T) {
			sent.Store(0)
			opts := testOptions(t)
			opts.Limits = transfer.Limits{MaxImageSize: 1 << 20}
			_, err := Pull(context.Background(), source(srv.URL+path), nil, opts)
			if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "max_image_size") {
				t.Fatalf("err = %v, want ResourceExhausted naming max_image_size", err)
			}
			if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
				t.Errorf("files left: %v", left)
			}
		})
	}
}

func TestPullFreeSpace(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/announced" {
			w.Header().Set("Content-Length", fmt.Sprint(100<<20))
		}
		chunk := bytes.Repeat([]byte{7}, 1<<20)
		for range 100 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	full := fmt.Errorf("the image store's file system is full: %w", errdefs.ErrResourceExhausted)
	for _, tc := range []struct {
		path     string
		wantNeed int64
	}{
		{"/announced", 100 << 20}, // refused before: the announced size does not fit
		{"/streamed", 0},          // refused during: the reserve is reached
	} {
		t.Run(tc.path, func(t *testing.T) {
			var asked []int64
			opts := testOptions(t)
			opts.Limits.CheckSpace = func(need int64) error {
				asked = append(asked, need)
				if need > 50<<20 || len(asked) > 1 {
					return full
				}
				return nil
			}
			_, err := Pull(context.Background(), source(srv.URL+tc.path), nil, opts)
			if !errors.Is(err, full) || len(asked) == 0 || asked[0] != tc.wantNeed {
				t.Fatalf("err = %v after asking %v; want the space error, first asking for %d", err, asked, tc.wantNeed)
			}
			if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
				t.Errorf("files left: %v", left)
			}
		})
	}
}

// TestPullDeadlines: a server that never answers, or stops sending in the
// middle of the body, fails the pull with Unavailable after the deadline
// (never DeadlineExceeded) and leaves no file.
func TestPullDeadlines(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	// Accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() {
				bufio.NewReader(c).ReadString('\n')
				<-release
				c.Close()
			}()
		}
	}()
	stalling := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(10<<20))
		w.Write(make([]byte, 1<<20))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer stalling.Close()
	for _, tc := range []struct {
		name, url, want string
	}{
		{"no answer", "http://" + silent.Addr().String() + "/disk", "timed out"},
		{"stalled body", stalling.URL + "/disk", "stalled after 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(t)
			opts.Limits = transfer.Limits{RequestTimeout: 2 * time.Second, StallTimeout: 4 * time.Second} // generous: a loaded machine must not look hung; the stall timeout beyond the request one
			start := time.Now()
			_, err := Pull(context.Background(), source(tc.url), nil, opts)
			took := time.Since(start)
			if !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want Unavailable saying %q, not DeadlineExceeded", err, tc.want)
			}
			if took > 10*time.Second {
				t.Errorf("took %v", took)
			}
			if left := tmpFiles(t, opts.TmpDir); len(left) != 0 {
				t.Errorf("files left: %v", left)
			}
		})
	}
}

// TestPullNoTransparentDecompression: a gzip Content-Encoding is stored as
// sent; the server cannot make vmpod inflate a small body into a big file.
func TestPullNoTransparentDecompression(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(make([]byte, 10<<20))
	zw.Close()
	var acceptEncoding string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gz.Bytes())
	}))
	defer srv.Close()
	res, err := Pull(context.Background(), source(srv.URL), nil, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(res.TmpFile)
	if res.Size != int64(gz.Len()) || acceptEncoding != "" {
		t.Fatalf("stored %d bytes (sent %d), Accept-Encoding %q", res.Size, gz.Len(), acceptEncoding)
	}
}

// TestPullSlowBodyIsNotStalled: a body that keeps coming, however slowly,
// is not taken for a stalled one, though the copy writes 1 MiB at a time.
func TestPullSlowBodyIsNotStalled(t *testing.T) {
	const pieces, piece = 32, 4 << 10
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(pieces*piece))
		for range pieces {
			w.Write(bytes.Repeat([]byte{7}, piece))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer slow.Close()
	opts := testOptions(t)
	opts.Limits = transfer.Limits{RequestTimeout: 2 * time.Second, StallTimeout: 2 * time.Second} // the body takes 3.2 s
	res, err := Pull(context.Background(), source(slow.URL+"/disk"), nil, opts)
	if err != nil || res.Size != pieces*piece {
		t.Fatalf("Pull = %+v, %v; want the whole slow body", res, err)
	}
}
