package main

import (
	"strings"
	"testing"
)

func TestReplace(t *testing.T) {
	doc := "# B\n\nprose\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nmore\n<!-- bench:b -->\n<!-- /bench:b -->\nend\n"
	got, err := Replace(doc, map[string]string{"a": "new a\n", "b": "new b"})
	if err != nil {
		t.Fatal(err)
	}
	want := "# B\n\nprose\n<!-- bench:a -->\nnew a\n<!-- /bench:a -->\nmore\n<!-- bench:b -->\nnew b\n<!-- /bench:b -->\nend\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	for name, bad := range map[string]string{
		"missing":   "<!-- bench:a -->\nx\n",
		"doubled":   "<!-- bench:a -->\n<!-- /bench:a -->\n<!-- bench:a -->\n<!-- /bench:a -->\n",
		"reordered": "<!-- /bench:a -->\n<!-- bench:a -->\n",
	} {
		if _, err := Replace(bad, map[string]string{"a": "x"}); err == nil || !strings.Contains(err.Error(), "a") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
