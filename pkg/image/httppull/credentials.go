package httppull

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"os"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
)

// maxCredentialFile bounds a bearer_token_file or basic_auth_file.
const maxCredentialFile = 64 << 10

// credentials returns the request URL without its user info, and the
// headers that authenticate to the URL's origin: the transport's headers,
// then Authorization from bearer_token_file, basic_auth_file or the URL's
// user info (only one of them may be given). Files are read now, so a
// rotated token takes effect at the next pull. Errors never show a secret:
// FailedPrecondition for a file that cannot be read or is malformed (named),
// InvalidArgument for credentials given twice.
func credentials(src imagetranslation.Source, log *slog.Logger) (*url.URL, http.Header, error) {
	t := src.Transport
	u, err := url.Parse(src.URL)
	if err != nil {
		// net/url's error repeats the URL: keep only its reason.
		msg := "not a valid URL"
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			msg = ue.Err.Error()
		}
		return nil, nil, fmt.Errorf("bad url %q in %s: %s: %w", src.RedactedURL(), src.RuleFile, msg, errdefs.ErrInvalidArgument)
	}
	h := http.Header{}
	for k, v := range t.Headers {
		h.Set(textproto.CanonicalMIMEHeaderKey(k), v)
	}
	sources := 0
	if h.Get("Authorization") != "" {
		sources++
	}
	if u.User != nil {
		sources++
		pass, _ := u.User.Password()
		h.Set("Authorization", basic(u.User.Username(), pass))
		u.User = nil
	}
	if t.BearerTokenFile != "" {
		sources++
		tok, err := readSecret(t, "bearer_token_file", t.BearerTokenFile, log)
		if err != nil {
			return nil, nil, err
		}
		h.Set("Authorization", "Bearer "+string(tok))
	}
	if t.BasicAuthFile != "" {
		sources++
		b, err := readSecret(t, "basic_auth_file", t.BasicAuthFile, log)
		if err != nil {
			return nil, nil, err
		}
		user, pass, ok := bytes.Cut(b, []byte(":"))
		if !ok || bytes.ContainsAny(b, "\r\n") {
			return nil, nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf(
				"%s: basic_auth_file %s must hold one line \"user:password\"", t.Label(), t.BasicAuthFile))
		}
		h.Set("Authorization", basic(string(user), string(pass)))
	}
	if sources > 1 {
		return nil, nil, fmt.Errorf("the url of the rule in %s carries user info while %s sets credentials too; keep one (prefer basic_auth_file): %w",
			src.RuleFile, t.Label(), errdefs.ErrInvalidArgument)
	}
	return u, h, nil
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// readSecret reads a credentials file of transport t (key names the
// setting), trimmed of surrounding white space. A file other users may read
// is used, with a warning: the secret is theirs already.
func readSecret(t imagetranslation.Transport, key, path string, log *slog.Logger) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%s: read %s %s: %w", t.Label(), key, path, err))
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 && log != nil {
		log.Warn("a credentials file of an image transport is readable by other users; chmod 600 it",
			"transport", t.Name, "file", path, "mode", fmt.Sprintf("%#o", st.Mode().Perm()))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%s: read %s %s: %w", t.Label(), key, path, err))
	}
	if len(b) > maxCredentialFile {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%s: %s %s is larger than %d bytes", t.Label(), key, path, maxCredentialFile))
	}
	s := bytes.TrimSpace(b)
	if len(s) == 0 {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%s: %s %s is empty", t.Label(), key, path))
	}
	if bytes.ContainsAny(s, "\x00") || (key == "bearer_token_file" && bytes.ContainsAny(s, "\r\n")) {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("%s: %s %s must hold one line", t.Label(), key, path))
	}
	return s, nil
}
