package oci

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"

	"github.com/vmpod/vmpod/pkg/image/transfer"
)

// classify wraps err, an error of containers/image talking to the registry
// of n, with an errdefs class and a hint at what to fix. what says what
// was being done ("fetch manifest").
func classify(err error, n reference.Named, what, confDesc string) error {
	reg := reference.Domain(n)
	f := transfer.Classify(err)
	if f == transfer.Cancelled {
		return fmt.Errorf("%s of %s: %w", what, n, err)
	}
	var unauth docker.ErrUnauthorizedForCredentials
	if errors.As(err, &unauth) {
		return fmt.Errorf("%s of %s: authentication to %s failed (unauthorized): %v; check the image pull secret's username and password or token: %w",
			what, n, reg, err, errdefs.ErrUnauthenticated)
	}
	if errors.Is(err, docker.ErrTooManyRequests) {
		return fmt.Errorf("%s of %s: %v; the registry %s throttles pulls, retry later: %w", what, n, err, reg, errdefs.ErrUnavailable)
	}
	// The registry API's error codes (UNAUTHORIZED, MANIFEST_UNKNOWN, ...)
	// arrive as an errcode.Error, or as a bare errcode.ErrorCode when the
	// message is the code's default.
	var ec errcode.Error
	if errors.As(err, &ec) {
		return byStatus(err, ec.Code.Descriptor().HTTPStatusCode, n, what)
	}
	var code errcode.ErrorCode
	if errors.As(err, &code) {
		return byStatus(err, code.Descriptor().HTTPStatusCode, n, what)
	}
	var us docker.UnexpectedHTTPStatusError
	if errors.As(err, &us) {
		return byStatus(err, us.StatusCode, n, what)
	}

	switch f {
	case transfer.TLSVerify:
		return fmt.Errorf("%s of %s: TLS verification of %s failed: %v; put the registry's CA in the certs directory as %s/ca.crt, or set insecure = true for it in %s: %w",
			what, n, reg, err, reg, confDesc, errdefs.ErrFailedPrecondition)
	case transfer.TLSRecord, transfer.PlainHTTP:
		return fmt.Errorf("%s of %s: %s answers plain HTTP, not HTTPS: %v; to use it, add [[registry]] location = %q with insecure = true to %s: %w",
			what, n, reg, err, reg, confDesc, errdefs.ErrFailedPrecondition)
	case transfer.Timeout, transfer.Network:
		return fmt.Errorf("%s of %s: registry %s is unreachable: %v; check the name and the network: %w", what, n, reg, err, errdefs.ErrUnavailable)
	}
	// Some errors (a 404 whose body is not the registry API's JSON, for
	// one) only keep the status in their text.
	msg := err.Error()
	for _, c := range []int{http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden} {
		if strings.Contains(msg, fmt.Sprintf("StatusCode: %d,", c)) {
			return byStatus(err, c, n, what)
		}
	}
	return fmt.Errorf("%s of %s: %w", what, n, err)
}

// byStatus words and classes a registry's HTTP status. Unlike an HTTP(S)
// image's (pkg/image/httppull), 401 is Unauthenticated (credentials are
// the registry's business), 410 is InvalidArgument and 429 Unavailable.
func byStatus(err error, status int, n reference.Named, what string) error {
	reg := reference.Domain(n)
	switch transfer.StatusFailure(status) {
	case transfer.NotFound:
		return fmt.Errorf("%s of %s: not found: %v; check the repository, tag or digest: %w", what, n, err, errdefs.ErrNotFound)
	case transfer.Unauthorized:
		return fmt.Errorf("%s of %s: authentication to %s failed (unauthorized): %v; give an image pull secret for %s or check its credentials: %w",
			what, n, reg, err, reg, errdefs.ErrUnauthenticated)
	case transfer.Forbidden:
		return fmt.Errorf("%s of %s: access denied by %s: %v; the credentials lack pull access to the repository: %w",
			what, n, reg, err, errdefs.ErrPermissionDenied)
	case transfer.TooManyRequests, transfer.ServerError:
		return fmt.Errorf("%s of %s: %v; the registry %s failed, retry later: %w", what, n, err, reg, errdefs.ErrUnavailable)
	case transfer.Gone, transfer.ClientError:
		return fmt.Errorf("%s of %s: the registry %s refused the request: %v: %w", what, n, reg, err, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("%s of %s: %w", what, n, err)
}
