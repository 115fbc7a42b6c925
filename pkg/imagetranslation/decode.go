package imagetranslation

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"
)

// yamlDocuments counts the YAML documents in data that have content:
// sigs.k8s.io/yaml reads only the first and would silently drop the others.
// A document starts at a line beginning with "---"; only comments and blank
// lines do not count as content.
func yamlDocuments(data []byte) int {
	n, content := 0, false
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "---") && (len(line) == 3 || strings.ContainsRune(" \t\r\n", rune(line[3]))) {
			if content {
				n++
			}
			content = false
			// Content may follow the marker on the same line.
			line = line[3:]
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
	}
	if content {
		n++
	}
	return n
}

// checkYAMLStrings reports values of a YAML rules file that are meant as
// strings but that YAML reads as booleans or numbers: decoding them into a
// string gives a different text (y, on and no become "true" and "false",
// 0755 becomes "493", 22.10 becomes "22.1"), so a rule would silently match
// or point to the wrong thing.
func checkYAMLStrings(data []byte) error {
	var doc struct {
		Translations []map[string]any          `json:"translations"`
		Transports   map[string]map[string]any `json:"transports"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	var errs multiError
	check := func(where string, fields map[string]any) {
		keys := make([]string, 0, len(fields))
		for k := range fields {
			// A timeout that is a number or boolean is no duration
			// either, and the duration check says so more clearly.
			if k != "timeout" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			switch v := fields[k].(type) {
			case string, nil:
			case bool:
				if k != "insecure_skip_verify" {
					errs = append(errs, fmt.Errorf("%s.%s: YAML reads the value as the boolean %v, not as text; put it in quotes", where, k, v))
				}
			case float64:
				errs = append(errs, fmt.Errorf("%s.%s: YAML reads the value as the number %v, not as text; put it in quotes", where, k, v))
			case map[string]any:
				// Header values may be secrets: name the header only.
				for _, hk := range slices.Sorted(maps.Keys(v)) {
					switch v[hk].(type) {
					case bool, float64:
						errs = append(errs, fmt.Errorf("%s.%s.%s: YAML reads the value as a boolean or a number, not as text; put it in quotes", where, k, hk))
					}
				}
			}
		}
	}
	for i, r := range doc.Translations {
		check(fmt.Sprintf("translations[%d]", i), r)
	}
	names := make([]string, 0, len(doc.Transports))
	for name := range doc.Transports {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		check("transports."+name, doc.Transports[name])
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// describeTOMLError turns a go-toml error into one line that gives the
// position and, for unknown keys, the keys.
func describeTOMLError(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		msgs := make([]string, 0, len(strict.Errors))
		for _, e := range strict.Errors {
			row, col := e.Position()
			msgs = append(msgs, fmt.Sprintf("line %d, column %d: unknown key %q", row, col, strings.Join(e.Key(), ".")))
		}
		return &describedError{msg: strings.Join(msgs, "; "), cause: err}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return &describedError{msg: fmt.Sprintf("line %d, column %d: %s", row, col, de.Error()), cause: err}
	}
	return err
}

// describedError gives cause a better message.
type describedError struct {
	msg   string
	cause error
}

func (e *describedError) Error() string { return e.msg }
func (e *describedError) Unwrap() error { return e.cause }
