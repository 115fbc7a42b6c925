//go:build !failpoints

package failpoint

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInertInNormalBuild arms a failpoint the way the e2e does and hits
// it: a normal build must go on (and leave the file alone).
func TestInertInNormalBuild(t *testing.T) {
	if Enabled {
		t.Fatal("Enabled in a build without the failpoints tag")
	}
	file := filepath.Join(t.TempDir(), "fp")
	if err := os.WriteFile(file, []byte(Points[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvFile, file)
	Hit(Points[0])
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the failpoint file was touched: %v", err)
	}
}
