// Package httppull downloads HTTP(S) disk images: the puller of the image
// names an image translation rule matches (pkg/imagetranslation), beside
// pkg/image/oci for registries. It owns the HTTP client built from the
// rule's transport (extra CA roots or insecure_skip_verify, client
// certificate, credentials, proxy, timeouts, redirects to http(s) only),
// the conditional request that finds an unchanged image without
// downloading it, streaming the body into a temporary file while hashing
// it (pkg/image/diskcopy) within the pull's limits (size, free space, a
// stalled body), the progress log, and the errors users see, classed with
// errdefs (README.md has the table). Checking and storing the file is the
// caller's job (pkg/image), as for the OCI puller.
//
// # Credentials
//
// A transport's headers, bearer_token_file, basic_auth_file and a URL's
// user info are sent only to the rule URL's host (over its scheme or
// https), and the client certificate is presented only there: a redirect
// to another host, or from https to http, is followed without them. URLs
// appear in logs and errors redacted (imagetranslation.RedactURL).
//
// The package is not called http so that it does not shadow net/http, which
// its files use throughout.
package httppull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/diskcopy"
	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/logging"
)

// Options configures a pull. The zero value works: os.TempDir(), progress
// every 5s, the context's logger, transfer.Limits' defaults.
type Options struct {
	// TmpDir is the directory the file is downloaded into (the store's tmp
	// dir, on the same file system as the store so the caller can rename
	// the file). Empty: os.TempDir().
	TmpDir string
	// ProgressInterval is how often a running download logs its progress.
	// Default 5s.
	ProgressInterval time.Duration
	// Log receives the pull's logs. Default: the context's logger
	// (pkg/logging).
	Log *slog.Logger
	// Downloaded, when set, is told the bytes each download fetched, when
	// it ends (failed or cancelled ones too), for metrics.
	Downloaded func(n int64)
	// Started, when set, is called when the server starts sending the image
	// (it answered 200 OK), before the body is read.
	Started func()
	// Limits bound the download: its size, the time to an answer, a
	// stalled body, the free space.
	Limits transfer.Limits
}

// Validators describe the copy of a URL's file the caller has, as the
// server did when it was downloaded; Pull sends them in a conditional
// request.
type Validators struct {
	ETag         string
	LastModified string
}

// Result is a finished pull.
type Result struct {
	// NotModified is set when the server answered the conditional request
	// with 304 Not Modified: nothing was downloaded and the other fields
	// are empty.
	NotModified bool
	// TmpFile is the file in Options.TmpDir holding the image, synced and
	// closed. The caller owns it: rename or remove it.
	TmpFile string
	// Digest is "sha256:<hex>" of the file: of the bytes received.
	Digest string
	// Size is the file's size in bytes.
	Size int64
	// Validators are the answer's ETag and Last-Modified, for the next
	// conditional pull.
	Validators Validators
	// CloseDelimited is set when the server gave neither a Content-Length
	// nor a chunked body and ended the body by closing the connection
	// (HTTP/1.x): a body cut short then looks complete, so the caller must
	// check the file for completeness by its own structure.
	CloseDelimited bool
}

// Pull downloads src.URL with the client src.Transport describes into a
// new file in opts.TmpDir. When have is not nil the request is conditional
// (If-None-Match, If-Modified-Since) and a 304 answer gives a Result with
// NotModified. Pull does not look inside the file: checking that it is a
// disk image, and that its digest is one a name pins, is the caller's job.
// Cancelling ctx stops the download and removes the file, and so does any
// failure. The URL's user info and query string never appear in logs or
// errors.
//
// Errors wrap an errdefs class: ErrInvalidArgument for a bad url, a TLS
// failure or an unexpected answer; ErrFailedPrecondition for the
// transport's unreadable CA, certificate, key or credentials files;
// ErrNotFound for 404 and 410; ErrPermissionDenied for 401 and 403;
// ErrResourceExhausted for an image above opts.Limits.MaxImageSize or one
// that does not fit the free space; ErrUnavailable for 5xx, an unreachable
// server, a timeout (the transport's, pull_request_timeout, or a body
// stalled for pull_stall_timeout) or a truncated download. A cancelled
// context (the caller's) is returned as it is.
func Pull(ctx context.Context, src imagetranslation.Source, have *Validators, opts Options) (_ Result, retErr error) {
	opts = opts.withDefaults()
	lim := opts.Limits
	log := opts.Log
	if log == nil {
		log = logging.From(ctx)
	}
	reqURL, creds, err := credentials(src, log)
	if err != nil {
		return Result{}, err
	}
	client, err := newClient(src.Transport, reqURL, creds, lim.RequestTimeout)
	if err != nil {
		return Result{}, fmt.Errorf("transport %q of rule in %s: %w", src.Transport.Name, src.RuleFile, err)
	}
	// Each pull builds its client from the rule's transport; drop its
	// keep-alive connections when done so they do not pile up.
	defer client.CloseIdleConnections()
	prog := &transfer.Progress{Start: time.Now()}
	// No byte for pull_stall_timeout, answer headers included, ends the
	// request.
	wctx, stopWatch := lim.WatchStall(ctx, &prog.Received)
	defer stopWatch()
	req, err := http.NewRequestWithContext(wctx, http.MethodGet, reqURL.String(), nil)
	if err != nil {
		return Result{}, fmt.Errorf("bad url %q in %s: %w", src.RedactedURL(), src.RuleFile, errdefs.ErrInvalidArgument)
	}
	req.Header.Set("User-Agent", "vmpod")
	if have != nil {
		if have.ETag != "" {
			req.Header.Set("If-None-Match", have.ETag)
		}
		if have.LastModified != "" {
			req.Header.Set("If-Modified-Since", have.LastModified)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		if te := transfer.OwnTimeout(wctx); te != nil {
			return Result{}, fmt.Errorf("fetch %s: %v; check the server: %w", src.RedactedURL(), te, errdefs.ErrUnavailable)
		}
		return Result{}, transportError(err, src)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && have != nil {
		return Result{NotModified: true}, nil
	}
	if err := statusError(resp, src); err != nil {
		return Result{}, err
	}
	if resp.ContentLength > lim.MaxImageSize {
		return Result{}, lim.TooLarge("the image at "+src.RedactedURL(), resp.ContentLength)
	}
	if resp.ContentLength > 0 {
		if err := lim.Space(resp.ContentLength); err != nil {
			return Result{}, err
		}
	}

	tmp, err := os.CreateTemp(opts.TmpDir, "pull-*")
	if err != nil {
		return Result{}, fmt.Errorf("create download file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()

	if opts.Started != nil {
		opts.Started()
	}
	log.Info("downloading image", "bytes_total", resp.ContentLength)
	prog.Total = resp.ContentLength
	h := sha256.New()
	stop := prog.Report(log, opts.ProgressInterval)
	// Received counts every read, not each 1 MiB buffer written: the
	// stall watch sees a slow body's progress as it comes.
	body := &counted{r: resp.Body, n: &prog.Received}
	var written atomic.Int64
	n, err := diskcopy.Copy(tmp, body, h, &written, diskcopy.Limit{
		Max: lim.MaxImageSize, Every: transfer.SpaceCheckInterval,
		Check: func(int64) error { return lim.Space(0) },
	})
	stop()
	if opts.Downloaded != nil {
		opts.Downloaded(n)
	}
	if err != nil {
		return Result{}, bodyError(ctx, wctx, src, lim, n, resp.ContentLength, err, log)
	}
	if resp.ContentLength > 0 && n != resp.ContentLength {
		return Result{}, truncatedError(n, resp.ContentLength)
	}
	syncStart := time.Now()
	if err := tmp.Sync(); err != nil {
		return Result{}, fmt.Errorf("sync download: %w", err)
	}
	log.Debug("download synced to disk", "seconds", fmt.Sprintf("%.2f", time.Since(syncStart).Seconds()))
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	elapsed := time.Since(prog.Start)
	log.Info("download complete", "id", digest, "bytes", n, "seconds", fmt.Sprintf("%.1f", elapsed.Seconds()),
		"rate_mib_s", transfer.Rate(n, elapsed))
	if err := tmp.Close(); err != nil {
		return Result{}, err
	}
	return Result{
		TmpFile:    tmpName,
		Digest:     digest,
		Size:       n,
		Validators: Validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")},
		CloseDelimited: resp.ContentLength < 0 && resp.ProtoMajor == 1 &&
			!slices.Contains(resp.TransferEncoding, "chunked"),
	}, nil
}

// bodyError words a failure while reading the body after n bytes.
func bodyError(ctx, wctx context.Context, src imagetranslation.Source, lim transfer.Limits, n, total int64, err error, log *slog.Logger) error {
	var tooLarge *diskcopy.TooLargeError
	switch {
	case ctx.Err() != nil:
		log.Info("pull cancelled, partial download removed", "bytes", n)
		return ctx.Err()
	case errors.As(err, &tooLarge):
		return lim.TooLarge("the image at "+src.RedactedURL(), tooLarge.Max+1)
	case transfer.OwnTimeout(wctx) != nil:
		return fmt.Errorf("download of %s stalled after %d bytes: %v; partial download removed, retry the pull: %w",
			src.RedactedURL(), n, transfer.OwnTimeout(wctx), errdefs.ErrUnavailable)
	case errdefs.IsResourceExhausted(err):
		return err
	}
	return readError(n, total, err)
}

// counted is a reader that adds what it reads to n.
type counted struct {
	r io.Reader
	n *atomic.Int64
}

func (c *counted) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	c.n.Add(int64(m))
	return m, err
}

// withDefaults fills in the defaults of the zero fields.
func (o Options) withDefaults() Options {
	if o.TmpDir == "" {
		o.TmpDir = os.TempDir()
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	o.Limits = o.Limits.WithDefaults()
	return o
}
