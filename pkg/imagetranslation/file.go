package imagetranslation

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"
)

// Rule is one validated [[translations]] entry of a rules file.
type Rule struct {
	// Name is the exact image name the rule matches, with or without a tag;
	// "" for a regexp rule.
	Name string
	// Regexp matches image names; nil for a name rule.
	Regexp *regexp.Regexp
	// URL is where the image is downloaded from. For a regexp rule it is a
	// template: $1, ${1}, $name and ${name} are replaced by capture groups
	// as regexp.Regexp.ExpandString does.
	URL string
	// Transport is the transport the rule names, resolved from the file's
	// [transports.X] table; the zero Transport when it names none.
	Transport Transport
	// File is the path of the file the rule came from.
	File string
	// Index is the rule's position among the file's [[translations]], from 0.
	Index int
}

// String names the rule in messages, e.g. "/etc/vmpod/images.d/a.toml translations[2]".
func (r Rule) String() string {
	return fmt.Sprintf("%s translations[%d]", r.File, r.Index)
}

// fileConfig is the document of a rules file. TOML and YAML share the keys
// (YAML goes through JSON, hence the json tags).
type fileConfig struct {
	Translations []fileRule               `toml:"translations" json:"translations"`
	Transports   map[string]fileTransport `toml:"transports" json:"transports"`
}

type fileRule struct {
	Name      string `toml:"name" json:"name"`
	Regexp    string `toml:"regexp" json:"regexp"`
	URL       string `toml:"url" json:"url"`
	Transport string `toml:"transport" json:"transport"`
}

type fileTransport struct {
	Timeout            string            `toml:"timeout" json:"timeout"`
	CAFile             string            `toml:"ca_file" json:"ca_file"`
	ClientCertFile     string            `toml:"client_cert_file" json:"client_cert_file"`
	ClientKeyFile      string            `toml:"client_key_file" json:"client_key_file"`
	InsecureSkipVerify bool              `toml:"insecure_skip_verify" json:"insecure_skip_verify"`
	Proxy              string            `toml:"proxy" json:"proxy"`
	Headers            map[string]string `toml:"headers" json:"headers"`
	BearerTokenFile    string            `toml:"bearer_token_file" json:"bearer_token_file"`
	BasicAuthFile      string            `toml:"basic_auth_file" json:"basic_auth_file"`
}

// isRulesFile tells whether a directory entry named name is read as a rules
// file: .toml, .yaml or .yml, and not hidden (editors and Kubernetes
// ConfigMap volumes keep their own files there under names starting with a dot).
func isRulesFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch filepath.Ext(name) {
	case ".toml", ".yaml", ".yml":
		return true
	}
	return false
}

// LoadFile reads and validates one rules file, TOML or YAML by its extension
// (.toml, .yaml or .yml), and returns its rules in order of appearance. It is
// what the Translator uses for each file of its directory, and suits a
// command that checks a file before it is installed. Errors name the file and
// every problem found in it; they are classed errdefs.ErrInvalidArgument for
// a bad extension or content and errdefs.ErrFailedPrecondition for a file
// that cannot be read.
func LoadFile(path string) ([]Rule, error) {
	if !isRulesFile(filepath.Base(path)) {
		return nil, invalidf("%s: not a rules file: the name must end in .toml, .yaml or .yml and not start with a dot", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, withClass(errdefs.ErrFailedPrecondition, fmt.Errorf("read image translation file: %w", err))
	}
	return parseFile(path, data)
}

// parseFile decodes and validates the content of the rules file path.
func parseFile(path string, data []byte) ([]Rule, error) {
	var fc fileConfig
	if filepath.Ext(path) == ".toml" {
		dec := toml.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return nil, invalidf("%s: %w", path, describeTOMLError(err))
		}
	} else {
		if n := yamlDocuments(data); n > 1 {
			return nil, invalidf("%s: holds %d YAML documents (separated by ---); only the first would be read, so put each in a file of its own", path, n)
		}
		if err := yaml.UnmarshalStrict(data, &fc); err != nil {
			return nil, invalidf("%s: %w", path, err)
		}
		if err := checkYAMLStrings(data); err != nil {
			return nil, invalidf("%s: %w", path, err)
		}
	}
	rules, err := fc.rules(path)
	if err != nil {
		return nil, invalidf("%s: %w", path, err)
	}
	return rules, nil
}

// rules validates fc, read from path, and returns its rules. The error lists
// every problem found.
func (fc fileConfig) rules(path string) ([]Rule, error) {
	var errs multiError
	dir := filepath.Dir(path)
	transports := make(map[string]Transport, len(fc.Transports))
	names := make([]string, 0, len(fc.Transports))
	for name := range fc.Transports {
		names = append(names, name)
	}
	slices.Sort(names) // report problems in a stable order
	for _, name := range names {
		tr, err := fc.Transports[name].transport(name, dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("transports.%s: %w", name, err))
		}
		transports[name] = tr
	}
	rules := make([]Rule, 0, len(fc.Translations))
	for i, fr := range fc.Translations {
		r, err := fr.rule(transports)
		if err != nil {
			errs = append(errs, fmt.Errorf("translations[%d]: %w", i, err))
			continue
		}
		r.File, r.Index = path, i
		rules = append(rules, r)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rules, nil
}

// transport validates the [transports.name] table ft of a file in dir.
func (ft fileTransport) transport(name, dir string) (Transport, error) {
	tr := Transport{
		Name:               name,
		CAFile:             resolvePath(dir, ft.CAFile),
		ClientCertFile:     resolvePath(dir, ft.ClientCertFile),
		ClientKeyFile:      resolvePath(dir, ft.ClientKeyFile),
		InsecureSkipVerify: ft.InsecureSkipVerify,
		Proxy:              ft.Proxy,
		Headers:            ft.Headers,
		BearerTokenFile:    resolvePath(dir, ft.BearerTokenFile),
		BasicAuthFile:      resolvePath(dir, ft.BasicAuthFile),
	}
	if ft.Timeout != "" {
		d, err := time.ParseDuration(ft.Timeout)
		if err != nil {
			return tr, fmt.Errorf("timeout %q is not a duration such as \"90s\" or \"1h30m\": %w", ft.Timeout, err)
		}
		tr.Timeout = d
	}
	return tr, tr.Validate()
}

// resolvePath makes a relative path relative to dir, the directory of the
// rules file that holds it.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// rule validates one [[translations]] entry; transports are the file's.
func (fr fileRule) rule(transports map[string]Transport) (Rule, error) {
	var r Rule
	switch {
	case fr.Name != "" && fr.Regexp != "":
		return r, errors.New("both name and regexp are set; a rule has exactly one of them")
	case fr.Name == "" && fr.Regexp == "":
		return r, errors.New("neither name nor regexp is set; a rule needs exactly one of them")
	case fr.Name != "":
		if err := checkRuleName(fr.Name); err != nil {
			return r, err
		}
		r.Name = fr.Name
	default:
		re, err := regexp.Compile(fr.Regexp)
		if err != nil {
			return r, fmt.Errorf("regexp %q: %w", fr.Regexp, err)
		}
		r.Regexp = re
	}
	if fr.URL == "" {
		return r, errors.New("url is missing")
	}
	probe := fr.URL
	if r.Regexp != nil {
		var err error
		if probe, err = checkTemplate(r.Regexp, fr.URL); err != nil {
			return r, err
		}
	}
	if err := checkURL(probe); err != nil {
		return r, fmt.Errorf("url %q: %w", RedactURL(fr.URL), err)
	}
	r.URL = fr.URL
	if fr.Transport != "" {
		tr, ok := transports[fr.Transport]
		if !ok {
			return r, fmt.Errorf("transport %q is not defined in this file; add a [transports.%s] table to it", fr.Transport, fr.Transport)
		}
		r.Transport = tr
	}
	return r, nil
}

// checkRuleName checks the name of a name rule.
func checkRuleName(name string) error {
	if strings.ContainsAny(name, " \t\r\n") {
		return fmt.Errorf("name %q contains white space", name)
	}
	if strings.Contains(name, "@") {
		return fmt.Errorf("name %q carries a digest; rules match names without their digest, so drop the @ part", name)
	}
	if strings.HasSuffix(name, ":") {
		return fmt.Errorf("name %q ends in ':' with no tag", name)
	}
	return nil
}

// checkURL checks that u is an absolute http or https URL with a host.
func checkURL(u string) error {
	parsed, err := parseURL(u)
	if err != nil {
		return err
	}
	if parsed.Scheme != "http" && parsed.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if parsed.Host == "" {
		return errors.New("no host")
	}
	return nil
}
