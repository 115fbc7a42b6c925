// Package transfer holds what vmpod's two pullers (pkg/image/httppull for
// HTTP(S) images, pkg/image/oci for registries) share about moving an image
// over the network: the periodic progress log line and the classification
// of a failed transfer.
//
// # Progress
//
// A Progress counts a pull's bytes; its Report logs "pull progress" at info
// level every interval (the pull_progress_interval setting) with bytes,
// bytes_total and percent when the size is known, rate_mib_s, and
// disk_bytes when the bytes written differ from those received.
//
// # Failures
//
// Classify tells what went wrong from an error of net/http, crypto/tls,
// crypto/x509 or net (a cancelled context, a certificate not accepted, a
// plain-HTTP server behind an https URL, a timeout, a refused connection),
// and StatusFailure from an HTTP status. The pullers turn a Failure into an
// error with an errdefs class and a hint at what to fix. Both words differ
// because the user fixes different things (a translation rule's transport,
// registries.conf) and, as documented for users (README.md for HTTP(S)
// images, docs/oci-images.md for registries), some classes differ too: a
// TLS verification failure is InvalidArgument for an HTTP(S) image but
// FailedPrecondition for a registry, 401 is PermissionDenied for the one
// and Unauthenticated for the other.
package transfer
