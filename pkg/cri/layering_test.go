package cri

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayering keeps pkg/cri an adapter layer (docs/architecture.md):
// its product code talks to the VM pod lifecycle and the image store, never
// to libvirt, cloud-init, the guest agent, CNI, cgroups or the pod options parser.
func TestLayering(t *testing.T) {
	forbidden := []string{
		"github.com/vmpod/vmpod/pkg/libvirttools",
		"github.com/vmpod/vmpod/pkg/cloudinit",
		"github.com/vmpod/vmpod/pkg/guest",
		"github.com/vmpod/vmpod/pkg/cni",
		"github.com/vmpod/vmpod/pkg/podspec",
		"github.com/vmpod/vmpod/pkg/vm",
		"github.com/vmpod/vmpod/pkg/cgroups",
		"libvirt.org/go/libvirt",
	}
	checkImports(t, ".", forbidden)
	// And the lifecycle knows nothing of the CRI service or gRPC.
	checkImports(t, "../lifecycle", []string{"github.com/vmpod/vmpod/pkg/cri", "google.golang.org/grpc"})
}

func checkImports(t *testing.T, dir string, forbidden []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		seen++
		for _, imp := range ast.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
}
