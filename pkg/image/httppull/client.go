package httppull

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// maxRedirects is the number of redirects a client follows, as net/http does
// by default.
const maxRedirects = 10

// newClient builds an HTTP client that downloads from origin (the rule's
// URL, without user info) as t says. Connecting, the TLS handshake and
// waiting for an answer's headers are each bounded by requestTimeout; a
// slow but steady body only by t.Timeout (and the stall watch of Pull).
//
// Credentials (creds: Authorization and the transport's headers) and the
// client certificate go only to origin's host, over origin's scheme or
// https: a redirect to another host, or from https to plain http, is
// followed without them. Responses are not transparently decompressed
// (no Accept-Encoding is sent), so a server cannot inflate what vmpod
// stores beyond what it sent.
//
// Build it once per download: each client has its own connection pools.
// Errors are classed errdefs.ErrInvalidArgument for invalid fields and
// errdefs.ErrFailedPrecondition for unreadable or invalid CA, certificate
// or key files; their messages name the file.
func newClient(t imagetranslation.Transport, origin *url.URL, creds http.Header, requestTimeout time.Duration) (*http.Client, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", t.Label(), err)
	}
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Off unless the user set insecure_skip_verify in the transport.
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pool, err := rootCAs(t)
		if err != nil {
			return nil, err
		}
		tlsConfig.RootCAs = pool
	}
	ownTLS := tlsConfig.Clone()
	if t.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.ClientCertFile, t.ClientKeyFile)
		if err != nil {
			return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf(
				"%s: load client_cert_file %s with client_key_file %s: %w",
				t.Label(), t.ClientCertFile, t.ClientKeyFile, err))
		}
		ownTLS.Certificates = []tls.Certificate{pair}
	}
	proxy := http.ProxyFromEnvironment
	if u, _ := t.ProxyURL(); u != nil {
		proxy = http.ProxyURL(u)
	}
	return &http.Client{
		Transport: &originTransport{
			origin: origin,
			creds:  creds,
			own:    newTransport(ownTLS, proxy, requestTimeout),
			other:  newTransport(tlsConfig, proxy, requestTimeout),
		},
		Timeout:       t.Timeout,
		CheckRedirect: checkRedirect,
	}, nil
}

func newTransport(tlsConfig *tls.Config, proxy func(*http.Request) (*url.URL, error), timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          10,
		DisableCompression:    true,
		// A custom TLSClientConfig turns HTTP/2 off unless asked for.
		ForceAttemptHTTP2: true,
	}
}

// originTransport sends requests for the origin's host through own (with
// the client certificate) and adds the credentials; every other request
// goes through other, without either.
type originTransport struct {
	origin     *url.URL
	creds      http.Header
	own, other *http.Transport
}

func (o *originTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !sameOrigin(o.origin, req.URL) {
		return o.other.RoundTrip(req)
	}
	if len(o.creds) > 0 {
		req = req.Clone(req.Context())
		for k, v := range o.creds {
			req.Header[k] = v
		}
	}
	return o.own.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach both
// pools.
func (o *originTransport) CloseIdleConnections() {
	o.own.CloseIdleConnections()
	o.other.CloseIdleConnections()
}

// sameOrigin tells whether u may receive the credentials of origin: the
// same host and port, and origin's scheme or https (never a downgrade to
// plain http). An upgrade from http://h to https://h on the default ports
// is the same origin too.
func sameOrigin(origin, u *url.URL) bool {
	if u.Scheme != origin.Scheme && u.Scheme != "https" {
		return false
	}
	if u.Scheme != origin.Scheme && origin.Port() == "" && u.Port() == "" {
		return strings.EqualFold(origin.Hostname(), u.Hostname())
	}
	return hostPort(origin) == hostPort(u)
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// rootCAs returns the system roots plus the certificates of t.CAFile.
func rootCAs(t imagetranslation.Transport) (*x509.CertPool, error) {
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, withClass(errdefs.ErrFailedPrecondition,
			fmt.Errorf("%s: read ca_file %s: %w", t.Label(), t.CAFile, err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// No system roots (unusual, e.g. a minimal container): trust the
		// given CA alone rather than failing.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, withClass(errdefs.ErrFailedPrecondition,
			fmt.Errorf("%s: ca_file %s holds no PEM certificate", t.Label(), t.CAFile))
	}
	return pool, nil
}

// errBadRedirect is wrapped by the error of a redirect to a URL that is not
// http(s).
var errBadRedirect = errors.New("redirect to a scheme other than http or https")

// checkRedirect follows up to maxRedirects redirects, to http(s) URLs only.
// Its errors show the target redacted (a signed URL's query is a secret).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%w: %s", errBadRedirect, imagetranslation.RedactURL(req.URL.String())))
	}
	if len(via) >= maxRedirects {
		return withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("stopped after %d redirects", maxRedirects))
	}
	return nil
}

// classed attaches an errdefs class to err without changing its message, so
// errors.Is finds both the class and every error wrapped in err.
type classed struct {
	err   error
	class error
}

func (e *classed) Error() string   { return e.err.Error() }
func (e *classed) Unwrap() []error { return []error{e.err, e.class} }

// withClass returns err classed as class.
func withClass(class, err error) error { return &classed{err: err, class: class} }
