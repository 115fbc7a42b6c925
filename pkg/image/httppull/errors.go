package httppull

import (
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// The errors of this file are what users see of a failed HTTP(S) pull; their
// classes are README.md's table ("Errors carry a gRPC code ..."). Each tells
// what to fix, usually in the rule's file (src.RuleFile).

// statusError words and classes an answer other than 200 OK: 404 and 410
// are NotFound, 401 and 403 PermissionDenied, 5xx Unavailable, anything
// else InvalidArgument.
func statusError(resp *http.Response, src imagetranslation.Source) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	switch transfer.StatusFailure(resp.StatusCode) {
	case transfer.NotFound, transfer.Gone:
		return fmt.Errorf("the server answered %s for %s; fix the url of the rule in %s or publish the image there: %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrNotFound)
	case transfer.Unauthorized, transfer.Forbidden:
		return fmt.Errorf("the server answered %s for %s; the image server refuses vmpod (check its access rules or the transport's client certificate in %s): %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrPermissionDenied)
	case transfer.ServerError:
		return fmt.Errorf("the server answered %s for %s; the image server failed, fix it or retry later: %w",
			resp.Status, src.URL, errdefs.ErrUnavailable)
	default:
		return fmt.Errorf("the server answered %s for %s (expected 200 OK); check the url of the rule in %s: %w",
			resp.Status, src.URL, src.RuleFile, errdefs.ErrInvalidArgument)
	}
}

// transportError words and classes an error of the request (no answer):
// a cancelled context as it is, TLS problems InvalidArgument, anything
// else (timeouts, refused connections) Unavailable.
func transportError(err error, src imagetranslation.Source) error {
	switch transfer.Classify(err) {
	case transfer.Cancelled:
		return err
	case transfer.TLSVerify:
		return fmt.Errorf("TLS verification of %s failed: %v; set ca_file (or insecure_skip_verify) in the transport of the rule in %s: %w",
			src.URL, err, src.RuleFile, errdefs.ErrInvalidArgument)
	case transfer.TLSRecord:
		return fmt.Errorf("TLS handshake with %s failed: %v (is it a plain-HTTP server? use an http:// url in %s): %w",
			src.URL, err, src.RuleFile, errdefs.ErrInvalidArgument)
	case transfer.Timeout:
		return fmt.Errorf("fetch %s timed out: %v; raise the transport's timeout in %s or check the server: %w", src.URL, err, src.RuleFile, errdefs.ErrUnavailable)
	default:
		// transfer.PlainHTTP included: net/http reports a plain-HTTP
		// server behind an https url as http.ErrSchemeMismatch, which
		// has always landed here.
		return fmt.Errorf("fetch %s: %v; check that the server is reachable: %w", src.URL, err, errdefs.ErrUnavailable)
	}
}

// readError words an error of reading the body after n of total bytes
// (total <= 0: unknown): Unavailable, retry.
func readError(n, total int64, err error) error {
	if total > 0 && n < total {
		return fmt.Errorf("download truncated: got %d of %d bytes before the connection failed (%v); retry the pull: %w",
			n, total, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("download: %v: %w", err, errdefs.ErrUnavailable)
}

// truncatedError is the error of a body that ended early without a read
// error: Unavailable, retry.
func truncatedError(n, total int64) error {
	return fmt.Errorf("download truncated: got %d of %d bytes; retry the pull: %w", n, total, errdefs.ErrUnavailable)
}
