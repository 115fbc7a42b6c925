package testdaemon

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// Build compiles vmpod (./cmd/vmpod of this module, with the go command on
// PATH) into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "vmpod")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/vmpod/vmpod/cmd/vmpod").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build vmpod: %v\n%s", err, out)
	}
	return bin, nil
}
