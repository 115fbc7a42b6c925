package httppull

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// Timeouts of each step of a download that newClient sets regardless of
// Transport.Timeout: a server that does not answer at all fails fast, while a
// slow but steady download of a large image is limited only by Timeout.
const (
	dialTimeout           = 30 * time.Second
	tlsHandshakeTimeout   = 30 * time.Second
	responseHeaderTimeout = 30 * time.Second
)

// maxRedirects is the number of redirects a client follows, as net/http does
// by default.
const maxRedirects = 10

// newClient builds an HTTP client that downloads as t says. Build it once per
// download (or keep it) rather than per request: each client has its own
// connection pool. Errors are classed errdefs.ErrInvalidArgument for invalid
// fields and errdefs.ErrFailedPrecondition for unreadable or invalid CA,
// certificate or key files; their messages name the file.
func newClient(t imagetranslation.Transport) (*http.Client, error) {
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
	if t.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.ClientCertFile, t.ClientKeyFile)
		if err != nil {
			return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf(
				"%s: load client_cert_file %s with client_key_file %s: %w",
				t.Label(), t.ClientCertFile, t.ClientKeyFile, err))
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	proxy := http.ProxyFromEnvironment
	if u, _ := t.ProxyURL(); u != nil {
		proxy = http.ProxyURL(u)
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          10,
		// A custom TLSClientConfig turns HTTP/2 off unless asked for.
		ForceAttemptHTTP2: true,
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       t.Timeout,
		CheckRedirect: checkRedirect,
	}, nil
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
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%w: %s", errBadRedirect, req.URL.Redacted()))
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
