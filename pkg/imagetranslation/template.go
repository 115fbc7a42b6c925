package imagetranslation

import (
	"fmt"
	"regexp"
	"strings"
)

// checkTemplate checks that every $ reference of the url template tmpl names
// a capture group of re, and returns tmpl with each reference replaced by "x"
// so that the caller can check the result is a URL. It follows the syntax of
// regexp.Regexp.Expand, which silently expands an unknown group to nothing:
// "$1_disk" means the group named "1_disk", not group 1 followed by "_disk".
func checkTemplate(re *regexp.Regexp, tmpl string) (string, error) {
	var probe strings.Builder
	for {
		before, after, ok := strings.Cut(tmpl, "$")
		probe.WriteString(before)
		if !ok {
			return probe.String(), nil
		}
		tmpl = after
		if strings.HasPrefix(tmpl, "$") {
			probe.WriteByte('$')
			tmpl = tmpl[1:]
			continue
		}
		name, rest, ok := templateRef(tmpl)
		if !ok {
			probe.WriteByte('$') // Expand copies a malformed reference as text
			continue
		}
		tmpl = rest
		if !hasGroup(re, name) {
			return "", fmt.Errorf("url refers to $%s, which is not a capture group of the regexp (it has %d numbered group(s)); write ${1}x rather than $1x when a group number is followed by a letter, digit or '_'",
				name, re.NumSubexp())
		}
		probe.WriteByte('x')
	}
}

// templateRef extracts the group name of the reference at the start of tmpl
// (after its '$'): "name" or "{name}" where name is letters, digits and '_'.
func templateRef(tmpl string) (name, rest string, ok bool) {
	brace := strings.HasPrefix(tmpl, "{")
	if brace {
		tmpl = tmpl[1:]
	}
	i := 0
	for i < len(tmpl) {
		c := tmpl[i]
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			break
		}
		i++
	}
	if i == 0 {
		return "", "", false
	}
	name, rest = tmpl[:i], tmpl[i:]
	if brace {
		if !strings.HasPrefix(rest, "}") {
			return "", "", false
		}
		rest = rest[1:]
	}
	return name, rest, true
}

// hasGroup tells whether name (a number or a group name) is a capture group
// of re.
func hasGroup(re *regexp.Regexp, name string) bool {
	num, isNum := 0, true
	for _, c := range name {
		if c < '0' || c > '9' || num > re.NumSubexp() {
			isNum = false
			break
		}
		num = num*10 + int(c-'0')
	}
	if isNum {
		return num <= re.NumSubexp()
	}
	return re.SubexpIndex(name) >= 0
}
