package imagetranslation

import (
	"fmt"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Transport says how to download the images of the rules that name it. The
// zero value is the default transport: system trust roots, proxy from the
// environment, no overall time limit, no credentials. pkg/image/httppull
// builds the HTTP client from it.
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
	// They are presented only to the host of the rule's URL, never to a host
	// a redirect leads to.
	ClientCertFile string
	ClientKeyFile  string
	// InsecureSkipVerify disables verification of the server's certificate.
	InsecureSkipVerify bool
	// Proxy is the proxy URL (http, https, socks5 or socks5h); "" uses the
	// HTTP_PROXY, HTTPS_PROXY and NO_PROXY environment variables.
	Proxy string
	// Headers are extra request headers (an API key, say). Like the
	// credentials below they are sent only to the scheme and host of the
	// rule's URL (or its https form), never after a redirect to another
	// host or from https to http, and never logged.
	Headers map[string]string
	// BearerTokenFile is a file whose content (surrounding white space
	// removed) is sent as "Authorization: Bearer <token>". It is read at
	// each pull, so a rotated token takes effect at once.
	BearerTokenFile string
	// BasicAuthFile is a file holding "user:password" on one line, sent as
	// HTTP basic authentication. Read at each pull.
	BasicAuthFile string
}

// Label names the transport in messages: `transport "x"`, or "default
// transport".
func (t Transport) Label() string {
	if t.Name == "" {
		return "default transport"
	}
	return fmt.Sprintf("transport %q", t.Name)
}

// forbiddenHeaders are headers the HTTP client manages itself.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Range": true, "If-None-Match": true, "If-Modified-Since": true, "Accept-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Proxy-Authorization": true, "Proxy-Connection": true,
}

// Validate checks the fields that can be checked without touching files.
// Errors wrap errdefs.ErrInvalidArgument; they name header keys but never
// their values.
func (t Transport) Validate() error {
	if t.Timeout < 0 {
		return invalidf("timeout %s is negative", t.Timeout)
	}
	if (t.ClientCertFile == "") != (t.ClientKeyFile == "") {
		return invalidf("client_cert_file and client_key_file must be set together")
	}
	if t.BearerTokenFile != "" && t.BasicAuthFile != "" {
		return invalidf("bearer_token_file and basic_auth_file are both set; a transport sends one Authorization header")
	}
	for k, v := range t.Headers {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		switch {
		case !validHeaderName(k):
			return invalidf("headers: %q is not a valid header name", k)
		case forbiddenHeaders[ck]:
			return invalidf("headers: %s is managed by vmpod and cannot be set", ck)
		case ck == "Authorization" && (t.BearerTokenFile != "" || t.BasicAuthFile != ""):
			return invalidf("headers: Authorization is set while bearer_token_file or basic_auth_file is too; keep one")
		case strings.ContainsAny(v, "\r\n\x00"):
			return invalidf("headers: the value of %s contains a line break or NUL", ck)
		}
	}
	if _, err := t.ProxyURL(); err != nil {
		return err
	}
	return nil
}

// validHeaderName tells whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c > 0x7e || c <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return true
}

// ProxyURL parses Proxy; nil when it is "". Errors wrap
// errdefs.ErrInvalidArgument and show the proxy URL redacted.
func (t Transport) ProxyURL() (*url.URL, error) {
	s := t.Proxy
	if s == "" {
		return nil, nil
	}
	u, err := parseURL(s)
	if err != nil {
		return nil, invalidf("proxy %q: %w", RedactURL(s), err)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, invalidf("proxy %q: scheme must be http, https, socks5 or socks5h", RedactURL(s))
	}
	if u.Host == "" {
		return nil, invalidf("proxy %q: no host", RedactURL(s))
	}
	return u, nil
}
