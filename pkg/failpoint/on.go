//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Enabled tells whether this build has failpoints.
const Enabled = true

// Hit kills the daemon, or holds it, when the failpoint file names this
// failpoint; see the package documentation.
func Hit(name string) {
	if !slices.Contains(Points, name) {
		panic("failpoint " + name + " is not in failpoint.Points")
	}
	path := os.Getenv(EnvFile)
	if path == "" {
		return
	}
	want, pause := read(path)
	if want != name {
		return
	}
	if pause {
		fmt.Fprintf(os.Stderr, "vmpod: failpoint %s: paused until %s is removed\n", name, path)
		for {
			time.Sleep(20 * time.Millisecond)
			if w, p := read(path); w != name || !p {
				fmt.Fprintf(os.Stderr, "vmpod: failpoint %s: released\n", name)
				return
			}
		}
	}
	os.Remove(path) // one crash: the restarted daemon runs through
	fmt.Fprintf(os.Stderr, "vmpod: failpoint %s: killing the daemon\n", name)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught; never go on past the step
}

// read returns the failpoint a file names and whether it pauses.
func read(path string) (name string, pause bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", false
	}
	return f[0], len(f) > 1 && f[1] == "pause"
}
