package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// Failure is what went wrong with a transfer, as far as the layers below the
// puller (context, TLS, TCP, DNS, HTTP) tell.
type Failure int

// The failures Classify and StatusFailure report.
const (
	// Unknown is an error none of the others describes.
	Unknown Failure = iota
	// Cancelled: a context was cancelled. A passed deadline is a Timeout:
	// the pullers tell the caller's own deadline apart by asking its
	// context, and report any other deadline (the transport's timeout,
	// pull_request_timeout) as Unavailable.
	Cancelled
	// TLSVerify: the server's certificate was not accepted (unknown
	// authority, wrong host name, expired or otherwise invalid).
	TLSVerify
	// TLSRecord: the TLS handshake met bytes that are not TLS.
	TLSRecord
	// PlainHTTP: a plain-HTTP server answered an https request.
	PlainHTTP
	// Timeout: a network operation timed out.
	Timeout
	// Network: another network error (refused, reset, unreachable, DNS).
	Network

	// NotFound is HTTP 404.
	NotFound
	// Gone is HTTP 410.
	Gone
	// Unauthorized is HTTP 401.
	Unauthorized
	// Forbidden is HTTP 403.
	Forbidden
	// TooManyRequests is HTTP 429.
	TooManyRequests
	// ServerError is HTTP 5xx (and any status above).
	ServerError
	// ClientError is another HTTP 4xx.
	ClientError
)

var failureNames = [...]string{
	Unknown: "unknown", Cancelled: "cancelled", TLSVerify: "TLS verification", TLSRecord: "TLS record",
	PlainHTTP: "plain HTTP", Timeout: "timeout", Network: "network",
	NotFound: "not found", Gone: "gone", Unauthorized: "unauthorized", Forbidden: "forbidden",
	TooManyRequests: "too many requests", ServerError: "server error", ClientError: "client error",
}

func (f Failure) String() string {
	if f < 0 || int(f) >= len(failureNames) {
		return "Failure(?)"
	}
	return failureNames[f]
}

// Classify tells what err, an error of a request or a body read, is. The
// first that applies wins, in the order of the constants. net/http's
// Client.Timeout errors match context.DeadlineExceeded; they are Timeout,
// not Cancelled.
func Classify(err error) Failure {
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certInvalid x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return Unknown
	case errors.Is(err, context.Canceled):
		return Cancelled
	case errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &certInvalid) || errors.As(err, &verifyErr):
		return TLSVerify
	case errors.As(err, &recordErr):
		return TLSRecord
	case errors.Is(err, http.ErrSchemeMismatch) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// containers/image hands net/http's error on as text only.
		return PlainHTTP
	case errors.As(err, &netErr) && netErr.Timeout() || errors.Is(err, context.DeadlineExceeded):
		return Timeout
	case errors.As(err, &netErr) || errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH):
		return Network
	}
	return Unknown
}

// StatusFailure tells what an HTTP status other than success is; Unknown
// for the statuses below 400.
func StatusFailure(code int) Failure {
	switch {
	case code == http.StatusNotFound:
		return NotFound
	case code == http.StatusGone:
		return Gone
	case code == http.StatusUnauthorized:
		return Unauthorized
	case code == http.StatusForbidden:
		return Forbidden
	case code == http.StatusTooManyRequests:
		return TooManyRequests
	case code >= 500:
		return ServerError
	case code >= 400:
		return ClientError
	}
	return Unknown
}
