//go:build !failpoints

package failpoint

// Enabled tells whether this build has failpoints.
const Enabled = false

// Hit does nothing in a normal build.
func Hit(string) {}
