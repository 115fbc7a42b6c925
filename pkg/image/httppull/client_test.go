package httppull

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// writePEM writes one PEM block of type typ to a new file in dir.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serverCAFile writes the certificate of the TLS test server srv to a file.
func serverCAFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	return writePEM(t, t.TempDir(), "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
}

// clientPKI makes a CA and a client certificate signed by it, writes the
// client certificate and key to files and returns a pool with the CA.
func clientPKI(t *testing.T) (pool *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test client CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "vmpod node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, writePEM(t, dir, "client.pem", "CERTIFICATE", der), writePEM(t, dir, "client.key", "PRIVATE KEY", keyDER)
}

// get fetches url with a client built from tr and returns the body.
func get(t *testing.T, tr imagetranslation.Transport, rawURL string) (string, error) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	client, err := newClient(tr, u, nil, 30*time.Second)
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(rawURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	return string(body), err
}

func isTLSVerifyError(err error) bool {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	return errors.As(err, &verr) || errors.As(err, &uerr)
}

func TestClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "disk")
	}))
	defer srv.Close()
	caFile := serverCAFile(t, srv)

	tests := []struct {
		name      string
		transport imagetranslation.Transport
		wantTLS   bool // want a certificate verification error
	}{
		{name: "ca_file", transport: imagetranslation.Transport{CAFile: caFile}},
		{name: "insecure_skip_verify", transport: imagetranslation.Transport{InsecureSkipVerify: true}},
		{name: "neither", transport: imagetranslation.Transport{}, wantTLS: true},
		{name: "ca_file of another CA", transport: imagetranslation.Transport{CAFile: writePEM(t, t.TempDir(), "other.pem", "CERTIFICATE", otherCert(t))}, wantTLS: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := get(t, tt.transport, srv.URL)
			if tt.wantTLS {
				if err == nil || !isTLSVerifyError(err) {
					t.Errorf("GET = %q, %v; want a certificate verification error", body, err)
				}
				return
			}
			if err != nil || body != "disk" {
				t.Errorf("GET = %q, %v; want disk", body, err)
			}
		})
	}
}

// otherCert returns a certificate unrelated to the test servers and to the
// client certificate of clientPKI's other callers.
func otherCert(t *testing.T) []byte {
	t.Helper()
	_, certFile, _ := clientPKI(t)
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	return block.Bytes
}

func TestClientClientCert(t *testing.T) {
	pool, certFile, keyFile := clientPKI(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	caFile := serverCAFile(t, srv)

	t.Run("with client certificate", func(t *testing.T) {
		body, err := get(t, imagetranslation.Transport{CAFile: caFile, ClientCertFile: certFile, ClientKeyFile: keyFile}, srv.URL)
		if err != nil || body != "vmpod node" {
			t.Errorf("GET = %q, %v; want the client's common name", body, err)
		}
	})
	t.Run("without client certificate", func(t *testing.T) {
		if body, err := get(t, imagetranslation.Transport{CAFile: caFile}, srv.URL); err == nil {
			t.Errorf("GET = %q; want the server to refuse", body)
		}
	})
}

func TestClientErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	_, certFile, keyFile := clientPKI(t)

	tests := []struct {
		name      string
		transport imagetranslation.Transport
		wantClass error
		wantMsg   []string
	}{
		{"missing ca_file", imagetranslation.Transport{Name: "internal", CAFile: missing}, errdefs.ErrFailedPrecondition, []string{`transport "internal"`, "ca_file", missing}},
		{"ca_file without certificate", imagetranslation.Transport{CAFile: notPEM}, errdefs.ErrFailedPrecondition, []string{"default transport", "ca_file", notPEM, "no PEM certificate"}},
		{"missing client key", imagetranslation.Transport{ClientCertFile: certFile, ClientKeyFile: missing}, errdefs.ErrFailedPrecondition, []string{certFile, missing}},
		{"key of another certificate", imagetranslation.Transport{ClientCertFile: otherCertFile(t), ClientKeyFile: keyFile}, errdefs.ErrFailedPrecondition, []string{keyFile}},
		{"certificate without key", imagetranslation.Transport{ClientCertFile: certFile}, errdefs.ErrInvalidArgument, []string{"client_key_file"}},
		{"negative timeout", imagetranslation.Transport{Timeout: -time.Second}, errdefs.ErrInvalidArgument, []string{"negative"}},
		{"bad proxy", imagetranslation.Transport{Proxy: "ftp://p"}, errdefs.ErrInvalidArgument, []string{"proxy"}},
		{"proxy without host", imagetranslation.Transport{Proxy: "http://"}, errdefs.ErrInvalidArgument, []string{"no host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := newClient(tt.transport, &url.URL{Scheme: "https", Host: "h"}, nil, time.Second)
			if client != nil || !errors.Is(err, tt.wantClass) {
				t.Fatalf("newClient() = %v, %v; want error of class %v", client, err, tt.wantClass)
			}
			for _, want := range tt.wantMsg {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// otherCertFile writes a certificate whose key the tests do not have.
func otherCertFile(t *testing.T) string {
	t.Helper()
	return writePEM(t, t.TempDir(), "other.pem", "CERTIFICATE", otherCert(t))
}

func TestClientRedirects(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ftp":
			http.Redirect(w, r, "ftp://files.example/disk.img", http.StatusFound)
		case "/file":
			http.Redirect(w, r, "file:///etc/shadow", http.StatusFound)
		case "/http":
			http.Redirect(w, r, srv.URL+"/disk", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, srv.URL+"/loop", http.StatusFound)
		default:
			io.WriteString(w, "disk")
		}
	}))
	defer srv.Close()
	tests := []struct {
		path    string
		wantErr error // nil: want the disk
	}{
		{"/http", nil},
		{"/ftp", errBadRedirect},
		{"/file", errBadRedirect},
		{"/loop", errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			body, err := get(t, imagetranslation.Transport{}, srv.URL+tt.path)
			if tt.wantErr == nil {
				if err != nil || body != "disk" {
					t.Errorf("GET = %q, %v; want disk", body, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("GET = %q, %v; want %v", body, err, tt.wantErr)
			}
		})
	}
}

func TestClientProxy(t *testing.T) {
	// A forward proxy gets requests with absolute URLs; this one answers
	// itself, so the image host need not exist.
	var asked string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.String()
		io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	body, err := get(t, imagetranslation.Transport{Proxy: proxy.URL}, "http://images.invalid/disk.img")
	if err != nil || body != "via proxy" {
		t.Fatalf("GET = %q, %v; want the proxy's answer", body, err)
	}
	if asked != "http://images.invalid/disk.img" {
		t.Errorf("proxy was asked for %q", asked)
	}
}

func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Send headers at once, then stall the body: only the overall
		// timeout can end this request.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	start := time.Now()
	_, err := get(t, imagetranslation.Transport{Timeout: 200 * time.Millisecond}, srv.URL)
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("GET error = %v, want a timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("GET took %s, want about 200ms", elapsed)
	}
}

func TestClientSettings(t *testing.T) {
	origin := &url.URL{Scheme: "https", Host: "images.example"}
	client, err := newClient(imagetranslation.Transport{Timeout: 10 * time.Minute}, origin, nil, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ot := client.Transport.(*originTransport)
	for _, tr := range []*http.Transport{ot.own, ot.other} {
		if client.Timeout != 10*time.Minute || tr.TLSHandshakeTimeout != 20*time.Second || tr.ResponseHeaderTimeout != 20*time.Second {
			t.Errorf("timeouts: client %s, TLS handshake %s, response header %s", client.Timeout, tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
		}
		if tr.Proxy == nil || tr.TLSClientConfig.InsecureSkipVerify || tr.TLSClientConfig.RootCAs != nil {
			t.Errorf("default transport: want proxy from environment, verification on, system roots")
		}
		if !tr.DisableCompression {
			t.Errorf("transparent decompression is on: a server could inflate what is stored")
		}
	}
	client, err = newClient(imagetranslation.Transport{}, origin, nil, time.Second)
	if err != nil || client.Timeout != 0 {
		t.Errorf("zero Transport: client timeout %v, %v; want no limit", client.Timeout, err)
	}
}
