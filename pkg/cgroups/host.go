// Package cgroups puts a VM's QEMU into its pod's cgroup and keeps it
// there, so the kubelet accounts the VM to its pod and the pod's limits
// bind it. It owns:
//
//   - the node's cgroup layout (Host: cgroup v1, v1 with the unified
//     hierarchy beside it ("hybrid"), or v2), read from the cgroup root;
//   - the pod's cgroup_parent resolved for the kubelet's cgroup driver
//     (cgroupfs: a path; systemd: a slice name expanded the way systemd
//     nests slices);
//   - a child cgroup per container, vmpod-<container ID>, below the pod's
//     cgroup in every hierarchy but devices (v1) or in the unified one
//     (v2), holding every thread of the VM's QEMU (Placement);
//   - the VM's memory and CPU limits in that child (Limits), its usage
//     read from it and from the pod's cgroup (Usage), the kernel's OOM
//     kills in it, and its removal.
//
// It knows nothing of libvirt or the CRI: the caller hands it QEMU's pid.
// The cgroup files are written and parsed by
// github.com/opencontainers/cgroups (runc's cgroup code), which knows the
// order in which the kernel accepts them.
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// The cgroup drivers, as the kubelet's cgroupDriver setting names them
// (and vmpod's config key cgroup_driver).
const (
	DriverCgroupfs = "cgroupfs"
	DriverSystemd  = "systemd"
)

// Options say where the node's cgroups and processes are.
type Options struct {
	// Root is where the cgroup file systems are mounted; default
	// /sys/fs/cgroup.
	Root string
	// Proc is the proc file system; default /proc.
	Proc string
	// Driver is DriverCgroupfs or DriverSystemd.
	Driver string
}

// Host is a node's cgroup file system.
type Host struct {
	root, proc, driver string
	// v2 says the node has only the unified hierarchy, at root.
	v2 bool
	// hierarchies are the directories under root that VMs join, sorted:
	// every v1 hierarchy but devices ("unified" too on a hybrid host), or
	// "" for v2.
	hierarchies []string
	// dirOf maps a controller as /proc/<pid>/cgroup names it ("memory",
	// "cpuacct", "name=systemd", "" for the unified hierarchy) to its
	// directory under root.
	dirOf map[string]string
	// k moves QEMU's tasks and says where they are.
	k kernel
}

// unifiedV1Dir is the unified hierarchy's directory on a hybrid host.
const unifiedV1Dir = "unified"

// Open reads the node's cgroup layout under o.Root: cgroup v2 when the
// root itself is a cgroup (it has cgroup.controllers), else one
// hierarchy per directory holding cgroup.procs, named after its
// controllers as mounted ("cpu,cpuacct", "memory", "systemd" for
// name=systemd, "unified" for the unified hierarchy of a hybrid host).
// Symbolic links ("cpu" -> "cpu,cpuacct") are not hierarchies of their
// own.
func Open(o Options) (*Host, error) {
	if o.Root == "" {
		o.Root = "/sys/fs/cgroup"
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	switch o.Driver {
	case DriverCgroupfs, DriverSystemd:
	default:
		return nil, fmt.Errorf("cgroup driver %q: want %s or %s: %w", o.Driver, DriverCgroupfs, DriverSystemd, errdefs.ErrInvalidArgument)
	}
	h := &Host{root: o.Root, proc: o.Proc, driver: o.Driver, dirOf: map[string]string{}}
	h.k = procKernel{h}
	if isFile(filepath.Join(o.Root, "cgroup.controllers")) {
		h.v2, h.hierarchies, h.dirOf[""] = true, []string{""}, ""
		return h, nil
	}
	ents, err := os.ReadDir(o.Root)
	if err != nil {
		return nil, fmt.Errorf("read the cgroup root: %w", err)
	}
	for _, e := range ents {
		// DirEntry types come from lstat: a symlink is not a directory.
		if !e.IsDir() || !isFile(filepath.Join(o.Root, e.Name(), "cgroup.procs")) {
			continue
		}
		name := e.Name()
		switch name {
		case unifiedV1Dir:
			h.dirOf[""] = name
		case "systemd":
			h.dirOf["name=systemd"] = name
		default:
			for _, c := range strings.Split(name, ",") {
				h.dirOf[c] = name
			}
		}
		// libvirt confines QEMU to the VM's own device nodes with its
		// devices cgroup: QEMU stays in it.
		if !slices.Contains(strings.Split(name, ","), "devices") {
			h.hierarchies = append(h.hierarchies, name)
		}
	}
	for _, c := range []string{"memory", "cpu", "cpuacct"} {
		if h.dirOf[c] == "" {
			return nil, fmt.Errorf("no cgroup v1 hierarchy with the %s controller under %s, and it is not cgroup v2 (no cgroup.controllers): %w",
				c, o.Root, errdefs.ErrFailedPrecondition)
		}
	}
	return h, nil
}

// Mode says which cgroup layout the node has: "v2", "v1" or "hybrid"
// (v1 with the unified hierarchy mounted beside it).
func (h *Host) Mode() string {
	switch {
	case h.v2:
		return "v2"
	case h.dirOf[""] != "":
		return "hybrid"
	}
	return "v1"
}

// Driver is the cgroup driver cgroup_parent is read for.
func (h *Host) Driver() string { return h.driver }

// Limits on a path: the kernel's, generously.
const (
	maxPathLen      = 4096
	maxComponentLen = 255
)

// ResolveParent turns a pod's cgroup_parent into its path below each
// hierarchy's root. With the cgroupfs driver it is that path already
// (/kubepods/burstable/pod<uid>); with the systemd driver it is a slice
// name that systemd nests by its dashes
// (kubepods-burstable-pod<uid>.slice ->
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice).
// A value that is not of the driver's form, or that would leave the
// cgroup tree, is refused with errdefs.ErrInvalidArgument.
func (h *Host) ResolveParent(cgroupParent string) (string, error) {
	if h.driver == DriverSystemd {
		return ExpandSlice(cgroupParent)
	}
	return cleanParent(cgroupParent)
}

// cleanParent checks a cgroupfs cgroup_parent: absolute, clean, below the
// root, made of plain names.
func cleanParent(p string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("cgroup_parent %q %s; with cgroup_driver %q it must be an absolute cgroup path such as /kubepods/burstable/pod<uid> (does the kubelet's cgroupDriver match?): %w",
			truncate(p), why, DriverCgroupfs, errdefs.ErrInvalidArgument)
	}
	switch {
	case !strings.HasPrefix(p, "/"):
		return bad("is not an absolute path")
	case len(p) > maxPathLen:
		return bad("is too long")
	case path.Clean(p) != p:
		return bad("is not a clean path (.., //, or a trailing /)")
	case p == "/":
		return bad("is the root cgroup, not a pod's")
	}
	for _, c := range strings.Split(p[1:], "/") {
		if err := checkComponent(c); err != nil {
			return bad(err.Error())
		}
	}
	return p, nil
}

// checkComponent allows the names cgroups are given in practice: letters,
// digits and ._-:@+=, not starting with a dot.
func checkComponent(c string) error {
	if c == "" || len(c) > maxComponentLen {
		return fmt.Errorf("has an empty or over-long component")
	}
	if c[0] == '.' {
		return fmt.Errorf("has a component %q starting with a dot", c)
	}
	for _, r := range c {
		if !isNameRune(r) && !strings.ContainsRune("._-:@+=", r) {
			return fmt.Errorf("has a character %q that is not a letter, a digit or one of ._-:@+=", r)
		}
	}
	return nil
}

func isNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// ExpandSlice turns a systemd slice name into its cgroup path: each dash
// nests a slice in the one named by what precedes it, and "-.slice" is
// the root slice. It refuses what systemd refuses (empty components, a
// "/"), and names with characters systemd escapes, with
// errdefs.ErrInvalidArgument.
func ExpandSlice(slice string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("cgroup_parent %q %s; with cgroup_driver %q it must be a systemd slice name such as kubepods-burstable-pod<uid>.slice (does the kubelet's cgroupDriver match?): %w",
			truncate(slice), why, DriverSystemd, errdefs.ErrInvalidArgument)
	}
	name, ok := strings.CutSuffix(slice, ".slice")
	switch {
	case !ok:
		return bad("does not end in .slice")
	case len(slice) > maxComponentLen:
		return bad("is too long for a unit name")
	case name == "-":
		return "/", nil
	case name == "":
		return bad("has no name before .slice")
	}
	for _, r := range name {
		// What systemd leaves unescaped in unit names (\ starts an
		// escape such as \x2d).
		if !isNameRune(r) && !strings.ContainsRune("_.:-\\", r) {
			return bad(fmt.Sprintf("has a character %q systemd does not allow in a unit name", r))
		}
	}
	var b strings.Builder
	prefix := ""
	for _, c := range strings.Split(name, "-") {
		if c == "" {
			return bad("has an empty component (a leading, trailing or double dash)")
		}
		b.WriteString("/" + prefix + c + ".slice")
		prefix += c + "-"
	}
	return b.String(), nil
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}
