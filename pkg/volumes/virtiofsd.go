package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadOnlyVirtiofsdName is the name under which the vmpod binary acts as
// virtiofsd for read-only shares (libvirt 9.0 and Debian 12's C virtiofsd
// have no read-only mode). libvirt starts it as the share's <binary>, with
// virtiofsd's own arguments (--fd=N -o source=DIR,...); it makes a mount
// namespace of its own in which DIR, and every mount below it, is
// read-only, and execs the real virtiofsd there. The guest's writes fail
// with EROFS whatever it does to its own mount; the host's view of DIR is
// untouched, and the namespace dies with virtiofsd, leaving nothing.
const ReadOnlyVirtiofsdName = "vmpod-virtiofsd-ro"

// virtiofsdPaths are where Debian (qemu-system-common) and others install
// the real virtiofsd. VMPOD_VIRTIOFSD, when set, comes first (tests).
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}

// InstallReadOnlyVirtiofsd links dir/vmpod-virtiofsd-ro to the running
// vmpod executable and returns the link's path, for the domains' <binary>.
// dir must be visible to libvirtd at the same path (the state directory
// is; in the DaemonSet both containers run the same image).
func InstallReadOnlyVirtiofsd(dir string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the vmpod executable: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("find the vmpod executable: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	link := filepath.Join(dir, ReadOnlyVirtiofsdName)
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(exe, tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return link, nil
}

// RunReadOnlyVirtiofsd is main for ReadOnlyVirtiofsdName: args are what
// libvirt gives virtiofsd. It returns only on error.
func RunReadOnlyVirtiofsd(args []string) error {
	real, err := realVirtiofsd()
	if err != nil {
		return err
	}
	if src, ok := virtiofsdSource(args); ok {
		if err := readOnlyView(src); err != nil {
			return fmt.Errorf("%s: make %s read-only: %w", ReadOnlyVirtiofsdName, src, err)
		}
	}
	// Without a source (--print-capabilities, --help) there is nothing to
	// protect: the real virtiofsd answers.
	return unix.Exec(real, append([]string{real}, args...), os.Environ())
}

func realVirtiofsd() (string, error) {
	paths := virtiofsdPaths
	if p := os.Getenv("VMPOD_VIRTIOFSD"); p != "" {
		paths = append([]string{p}, paths...)
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: no virtiofsd found (looked for %s)", ReadOnlyVirtiofsdName, strings.Join(paths, ", "))
}

// virtiofsdSource finds source=DIR in virtiofsd's -o options (as libvirt
// writes them: "-o" then a comma-separated list, commas in values doubled).
func virtiofsdSource(args []string) (string, bool) {
	for i, a := range args {
		var opts string
		switch {
		case a == "-o" && i+1 < len(args):
			opts = args[i+1]
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = a[2:]
		default:
			continue
		}
		for _, o := range splitOptions(opts) {
			if v, ok := strings.CutPrefix(o, "source="); ok && v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// splitOptions splits at single commas; ",," is a comma in a value.
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// readOnlyView gives this thread (and so the program it execs) a mount
// namespace of its own in which src and every mount below it are
// read-only.
func readOnlyView(src string) error {
	// Namespaces belong to threads: stay on this one until the exec.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare the mount namespace: %w", err)
	}
	// Nothing done here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(src, src, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(-1, src, unix.AT_RECURSIVE, attr); err != nil {
		if !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("make %s read-only: %w", src, err)
		}
		// Before Linux 5.12: the top mount only.
		if err := unix.Mount("", src, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", src, err)
		}
	}
	return nil
}
