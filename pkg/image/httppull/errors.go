package httppull

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// The errors of this file are what users see of a failed HTTP(S) pull; their
// classes are README.md's table ("Errors carry a gRPC code ..."). Each tells
// what to fix, usually in the rule's file (src.RuleFile). URLs appear
// redacted (imagetranslation.RedactURL), and the errors of net/http, which
// repeat the URL with its query string, only by their cause.

// statusError words and classes an answer other than 200 OK: 404 and 410
// are NotFound, 401 and 403 PermissionDenied, 5xx Unavailable, anything
// else InvalidArgument.
func statusError(resp *http.Response, src imagetranslation.Source) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	u := src.RedactedURL()
	switch transfer.StatusFailure(resp.StatusCode) {
	case transfer.NotFound, transfer.Gone:
		return fmt.Errorf("the server answered %s for %s; fix the url of the rule in %s or publish the image there: %w",
			resp.Status, u, src.RuleFile, errdefs.ErrNotFound)
	case transfer.Unauthorized, transfer.Forbidden:
		return fmt.Errorf("the server answered %s for %s; the image server refuses vmpod (check its access rules or the transport's credentials or client certificate in %s): %w",
			resp.Status, u, src.RuleFile, errdefs.ErrPermissionDenied)
	case transfer.ServerError:
		return fmt.Errorf("the server answered %s for %s; the image server failed, fix it or retry later: %w",
			resp.Status, u, errdefs.ErrUnavailable)
	default:
		return fmt.Errorf("the server answered %s for %s (expected 200 OK); check the url of the rule in %s: %w",
			resp.Status, u, src.RuleFile, errdefs.ErrInvalidArgument)
	}
}

// cause strips net/http's *url.Error, whose message repeats the request
// URL (query string included), down to its cause.
func cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// transportError words and classes an error of the request (no answer):
// a cancelled context as it is, TLS problems InvalidArgument, anything
// else (timeouts, refused connections) Unavailable. The cause is quoted
// with %v, so that a timeout (which matches context.DeadlineExceeded)
// does not reach users as DeadlineExceeded.
func transportError(err error, src imagetranslation.Source) error {
	u, c := src.RedactedURL(), cause(err)
	switch transfer.Classify(err) {
	case transfer.Cancelled:
		return err
	case transfer.TLSVerify:
		return fmt.Errorf("TLS verification of %s failed: %v; set ca_file (or insecure_skip_verify) in the transport of the rule in %s: %w",
			u, c, src.RuleFile, errdefs.ErrInvalidArgument)
	case transfer.TLSRecord:
		return fmt.Errorf("TLS handshake with %s failed: %v (is it a plain-HTTP server? use an http:// url in %s): %w",
			u, c, src.RuleFile, errdefs.ErrInvalidArgument)
	case transfer.Timeout:
		return fmt.Errorf("fetch %s timed out: %v; check the server, or raise the transport's timeout in %s (whole download) or pull_request_timeout (connection and answer): %w",
			u, c, src.RuleFile, errdefs.ErrUnavailable)
	default:
		// transfer.PlainHTTP included: net/http reports a plain-HTTP
		// server behind an https url as http.ErrSchemeMismatch, which
		// has always landed here.
		var classed *classed
		if errors.As(c, &classed) {
			// Our own redirect check, already worded and classed.
			return fmt.Errorf("fetch %s: %w", u, c)
		}
		return fmt.Errorf("fetch %s: %v; check that the server is reachable: %w", u, c, errdefs.ErrUnavailable)
	}
}

// readError words an error of reading the body after n of total bytes
// (total <= 0: unknown): Unavailable, retry.
func readError(n, total int64, err error) error {
	if total > 0 && n < total {
		return fmt.Errorf("download truncated: got %d of %d bytes before the connection failed (%v); retry the pull: %w",
			n, total, cause(err), errdefs.ErrUnavailable)
	}
	return fmt.Errorf("download: %v: %w", cause(err), errdefs.ErrUnavailable)
}

// truncatedError is the error of a body that ended early without a read
// error: Unavailable, retry.
func truncatedError(n, total int64) error {
	return fmt.Errorf("download truncated: got %d of %d bytes; retry the pull: %w", n, total, errdefs.ErrUnavailable)
}
