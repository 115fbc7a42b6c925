package cni

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as
// iproute2's `ip netns` does, so `ip netns exec` works on a pod's netns.
const netnsDir = "/run/netns"

// netnsName is the netns name of a sandbox.
func netnsName(sandboxID string) string { return "vmpod-" + sandboxID }

// netnsPath is the netns bind mount of a sandbox.
func netnsPath(sandboxID string) string { return filepath.Join(netnsDir, netnsName(sandboxID)) }

// createNetNS creates the named network namespace path (under netnsDir)
// unless it exists. The namespace is made on a throwaway OS thread: the
// thread that unshares stays in the new namespace, so it is never handed
// back to the Go scheduler (the goroutine exits with the thread locked and
// the runtime ends the thread).
func createNetNS(path string) error {
	if isNetNS(path) {
		return nil
	}
	// A plain file left by an interrupted create: mount over it again.
	os.Remove(path)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(filepath.Base(path))
		if err != nil {
			os.Remove(path)
			errc <- err
			return
		}
		h.Close()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create network namespace %s: %w", path, err)
	}
	return nil
}

// isNetNS reports whether path is a mounted network namespace.
func isNetNS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// deleteNetNS unmounts and removes a named network namespace; a missing one
// is no error.
func deleteNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	return nil
}
