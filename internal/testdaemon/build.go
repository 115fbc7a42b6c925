package testdaemon

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles vmpod (./cmd/vmpod of this module, with the go command on
// PATH) into dir and returns the binary's path. Build tags, if any, are
// passed to go build (e.g. "failpoints").
func Build(dir string, tags ...string) (string, error) {
	name := "vmpod"
	args := []string{"build"}
	if len(tags) > 0 {
		name += "-" + strings.Join(tags, "-")
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	bin := filepath.Join(dir, name)
	args = append(args, "-o", bin, "github.com/vmpod/vmpod/cmd/vmpod")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}
