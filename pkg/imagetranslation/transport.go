package imagetranslation

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/containerd/errdefs"
)

// Timeouts of each step of a download that HTTPClient sets regardless of
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

// Transport says how to download the images of the rules that name it. The
// zero value is the default transport: system trust roots, proxy from the
// environment, no overall time limit.
type Transport struct {
	// Name is the X of the [transports.X] table, or "" for the default.
	Name string
	// Timeout limits a whole request including reading the body; 0 means no
	// limit (large images take long).
	Timeout time.Duration
	// CAFile is a PEM file of CA certificates trusted in addition to the
	// system roots; "" trusts the system roots only.
	CAFile string
	// ClientCertFile and ClientKeyFile are a PEM certificate and its key
	// presented to servers that ask for a client certificate; both or neither.
	ClientCertFile string
	ClientKeyFile  string
	// InsecureSkipVerify disables verification of the server's certificate.
	InsecureSkipVerify bool
	// Proxy is the proxy URL (http, https, socks5 or socks5h); "" uses the
	// HTTP_PROXY, HTTPS_PROXY and NO_PROXY environment variables.
	Proxy string
}

// label names the transport in messages.
func (t Transport) label() string {
	if t.Name == "" {
		return "default transport"
	}
	return fmt.Sprintf("transport %q", t.Name)
}

// validate checks the fields that can be checked without touching files.
func (t Transport) validate() error {
	if t.Timeout < 0 {
		return invalidf("timeout %s is negative", t.Timeout)
	}
	if (t.ClientCertFile == "") != (t.ClientKeyFile == "") {
		return invalidf("client_cert_file and client_key_file must be set together")
	}
	if _, err := parseProxy(t.Proxy); err != nil {
		return err
	}
	return nil
}

// parseProxy parses a proxy URL; "" gives nil.
func parseProxy(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, invalidf("proxy %q: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, invalidf("proxy %q: scheme must be http, https, socks5 or socks5h", s)
	}
	if u.Host == "" {
		return nil, invalidf("proxy %q: no host", s)
	}
	return u, nil
}

// HTTPClient builds an HTTP client that downloads as t says. Build it once per
// download (or keep it) rather than per request: each client has its own
// connection pool. Errors are classed errdefs.ErrInvalidArgument for invalid
// fields and errdefs.ErrFailedPrecondition for unreadable or invalid CA,
// certificate or key files; their messages name the file.
func (t Transport) HTTPClient() (*http.Client, error) {
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", t.label(), err)
	}
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Off unless the user set insecure_skip_verify in the transport.
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pool, err := t.rootCAs()
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
				t.label(), t.ClientCertFile, t.ClientKeyFile, err))
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	proxy := http.ProxyFromEnvironment
	if u, _ := parseProxy(t.Proxy); u != nil {
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
func (t Transport) rootCAs() (*x509.CertPool, error) {
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, withClass(errdefs.ErrFailedPrecondition,
			fmt.Errorf("%s: read ca_file %s: %w", t.label(), t.CAFile, err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// No system roots (unusual, e.g. a minimal container): trust the
		// given CA alone rather than failing.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, withClass(errdefs.ErrFailedPrecondition,
			fmt.Errorf("%s: ca_file %s holds no PEM certificate", t.label(), t.CAFile))
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
