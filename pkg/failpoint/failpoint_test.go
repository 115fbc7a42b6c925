package failpoint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestPointsMatchSource checks that every failpoint.Hit call names a
// listed failpoint with a literal, and that every listed failpoint is hit
// somewhere: the e2e walks the list, so a point missing from it would go
// untested and a listed point without a call would fail that walk.
func TestPointsMatchSource(t *testing.T) {
	root := filepath.Join("..", "..")
	found := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "node_modules", "failpoint":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Hit" {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "failpoint" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: failpoint.Hit with a non-literal name", path)
				return true
			}
			name, _ := strconv.Unquote(lit.Value)
			found[name] = append(found[name], path)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, where := range found {
		if !slices.Contains(Points, name) {
			t.Errorf("failpoint %q (hit in %v) is not in Points", name, where)
		}
	}
	seen := map[string]bool{}
	for _, p := range Points {
		if seen[p] {
			t.Errorf("failpoint %q is listed twice", p)
		}
		seen[p] = true
		if len(found[p]) == 0 {
			t.Errorf("failpoint %q is listed but no code hits it", p)
		}
	}
}
