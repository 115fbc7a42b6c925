package imagetranslation

import (
	"fmt"
	"net/url"
	"time"
)

// Transport says how to download the images of the rules that name it. The
// zero value is the default transport: system trust roots, proxy from the
// environment, no overall time limit. pkg/image/httppull builds the HTTP
// client from it.
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

// Label names the transport in messages: `transport "x"`, or "default
// transport".
func (t Transport) Label() string {
	if t.Name == "" {
		return "default transport"
	}
	return fmt.Sprintf("transport %q", t.Name)
}

// Validate checks the fields that can be checked without touching files.
// Errors wrap errdefs.ErrInvalidArgument.
func (t Transport) Validate() error {
	if t.Timeout < 0 {
		return invalidf("timeout %s is negative", t.Timeout)
	}
	if (t.ClientCertFile == "") != (t.ClientKeyFile == "") {
		return invalidf("client_cert_file and client_key_file must be set together")
	}
	if _, err := t.ProxyURL(); err != nil {
		return err
	}
	return nil
}

// ProxyURL parses Proxy; nil when it is "". Errors wrap
// errdefs.ErrInvalidArgument.
func (t Transport) ProxyURL() (*url.URL, error) {
	s := t.Proxy
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
