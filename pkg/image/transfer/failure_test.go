package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
)

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	get := func(err error) error { return &url.Error{Op: "Get", URL: "https://h/x", Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		want Failure
	}{
		{"nil", nil, Unknown},
		{"cancelled", fmt.Errorf("read: %w", context.Canceled), Cancelled},
		{"deadline", get(context.DeadlineExceeded), Timeout},
		{"unknown authority", get(x509.UnknownAuthorityError{}), TLSVerify},
		{"host name", get(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}), TLSVerify},
		{"expired", get(x509.CertificateInvalidError{Reason: x509.Expired}), TLSVerify},
		{"verification", get(&tls.CertificateVerificationError{Err: errors.New("bad")}), TLSVerify},
		{"record header", get(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), TLSRecord},
		{"scheme mismatch", get(http.ErrSchemeMismatch), PlainHTTP},
		{"scheme mismatch as text", errors.New(`pinging container registry h: Get "https://h/v2/": http: server gave HTTP response to HTTPS client`), PlainHTTP},
		{"timeout", get(timeoutErr{}), Timeout},
		{"refused", get(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), Network},
		{"dns", &net.DNSError{Err: "no such host", Name: "h", IsNotFound: true}, Network},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), Network},
		{"url error", get(errors.New("EOF")), Network}, // *url.Error is a net.Error
		{"other", errors.New("something else"), Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestClassifyRealErrors classifies what net/http returns for the
// situations the pullers explain to users.
func TestClassifyRealErrors(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(http.NotFoundHandler())
	defer plainSrv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	for _, tc := range []struct {
		name, url string
		want      Failure
	}{
		{"self-signed certificate", tlsSrv.URL, TLSVerify},
		{"https to a plain-HTTP server", "https://" + strings.TrimPrefix(plainSrv.URL, "http://"), PlainHTTP},
		{"connection refused", closedURL, Network},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			resp, err := client.Get(tc.url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s succeeded", tc.url)
			}
			if got := Classify(err); got != tc.want {
				t.Errorf("Classify(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}

func TestStatusFailure(t *testing.T) {
	for code, want := range map[int]Failure{
		200: Unknown, 206: Unknown, 304: Unknown, 399: Unknown,
		400: ClientError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 410: Gone, 418: ClientError, 429: TooManyRequests,
		500: ServerError, 503: ServerError, 599: ServerError,
	} {
		if got := StatusFailure(code); got != want {
			t.Errorf("StatusFailure(%d) = %v, want %v", code, got, want)
		}
	}
}
