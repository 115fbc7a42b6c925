package imagetranslation

import (
	"errors"
	"net/url"
)

// RedactURL returns u fit for logs, errors, the image store's records and
// `crictl inspecti`: the user info (user:password@) and the query string
// (a signed URL's signature, an API key) are replaced by "redacted", the
// fragment dropped. A string that does not parse as a URL is not echoed at
// all, since it may hold a secret anywhere.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if p.User != nil {
		p.User = url.User("redacted")
	}
	if p.RawQuery != "" || p.ForceQuery {
		p.RawQuery, p.ForceQuery = "redacted", false
	}
	p.Fragment, p.RawFragment = "", ""
	return p.String()
}

// HasSecrets tells whether u carries user info or a query string, the
// parts RedactURL hides.
func HasSecrets(u string) bool {
	p, err := url.Parse(u)
	return err != nil || p.User != nil || p.RawQuery != "" || p.ForceQuery
}

// RedactedURL is RedactURL(s.URL).
func (s Source) RedactedURL() string { return RedactURL(s.URL) }

// parseURL is url.Parse whose error does not repeat the URL (net/url's
// does, user info and query string included).
func parseURL(u string) (*url.URL, error) {
	p, err := url.Parse(u)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, ue.Err
		}
		return nil, errors.New("not a valid URL")
	}
	return p, nil
}
