package k8se2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// nodeOwnPaths are DaemonSet host paths that are the node's, not vmpod's:
// the kernel's, the kubelet's, the CNI configuration, and /run/netns
// (shared with `ip netns` and other runtimes; vmpod removes its own
// namespaces with its pods). The uninstall leaves them; every other host
// path of the DaemonSet must be one the uninstall removes.
var nodeOwnPaths = []string{"/sys/fs/cgroup", "/dev/kvm", "/var/log/pods", "/var/lib/kubelet/pods",
	"/var/lib/kubelet/checkpoints", "/etc/cni/net.d", "/opt/cni/bin", "/run/netns"}

// uninstallPaths reads the directories docs/install.md's uninstall removes
// on a node (its `rm -rf` lines), so the test removes what a user would.
func (c *cluster) uninstallPaths() []string {
	c.t.Helper()
	f, err := os.Open(filepath.Join(repo, "docs/install.md"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var paths []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = strings.HasPrefix(l, "## Uninstalling")
		}
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "rm -rf "); in && ok {
			paths = append(paths, strings.Fields(rest)...)
		}
	}
	if len(paths) == 0 {
		c.t.Fatal("docs/install.md: no rm -rf lines under ## Uninstalling")
	}
	// Every host path of the DaemonSet is either the node's or removed.
	for _, v := range c.renderedDaemonSet(filepath.Join(repo, "deploy/overlays/example")).Spec.Template.Spec.Volumes {
		if v.HostPath != nil && !slices.Contains(nodeOwnPaths, v.HostPath.Path) && !slices.Contains(paths, v.HostPath.Path) {
			c.t.Errorf("the DaemonSet's host path %s (volume %s) is neither removed by docs/install.md's uninstall nor the node's own", v.HostPath.Path, v.Name)
		}
	}
	return paths
}

// hostDaemons lists the pids of the processes named libvirtd and virtlogd.
func hostDaemons() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if n := strings.TrimSpace(string(b)); n == "libvirtd" || n == "virtlogd" {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// uninstall takes docs/install.md's steps after the VM pods are deleted:
// the kubelet back to containerd, the router off, kubectl delete -k, the
// label off, then on the node the images and vmpod's and libvirt's
// directories.
func (c *cluster) uninstall(images []image) {
	c.t.Helper()
	c.restartKubelet(c.containerdSock)
	c.stop("router", 10*time.Second)
	os.Remove(c.routerBin)
	c.mustKubectl("delete", "-k", c.overlayDir(), "--wait=true", "--timeout=4m")
	c.labelNode(false)
	// The kubelet stops the pod's containers; its sandbox goes in the
	// kubelet's next garbage collection.
	c.waitFor("no pods of "+dsNamespace+" in containerd", "kubelet", 4*time.Minute, func() error {
		out, err := c.crictl(c.containerdSock, "pods", "--namespace", dsNamespace, "-q")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("pods %q %v", strings.TrimSpace(out), err)
		}
		return nil
	})
	for _, img := range images {
		if out, err := c.ctr("images", "rm", img.name); err != nil {
			c.t.Fatalf("%v\n%s", err, out)
		}
	}
	// No domain is left to remove with the directories: none defined, none
	// running.
	for _, pattern := range []string{"etc/libvirt/qemu/*.xml", "run/libvirt/qemu/*.xml", "run/libvirt/qemu/*.pid"} {
		if left, _ := filepath.Glob(filepath.Join(c.root, pattern)); len(left) > 0 {
			c.t.Errorf("after the uninstall's kubectl steps: libvirt domain files %v", left)
		}
	}
	for _, p := range c.uninstallPaths() {
		if err := os.RemoveAll(c.root + p); err != nil {
			c.t.Fatal(err)
		}
	}
}

// dsProcesses lists the DaemonSet's processes: libvirtd, virtlogd and
// vmpod in another mount namespace than the test's (the host's libvirtd
// and virtlogd, and the vmpod of other tests on this machine, run in
// ours), except the pids in daemons (the host's at the start).
func dsProcesses(daemons []int) []string {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || slices.Contains(daemons, pid) {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		comm := strings.TrimSpace(string(b))
		if comm != "libvirtd" && comm != "virtlogd" && comm != "vmpod" {
			continue
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ns != "" && ns != self {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			found = append(found, fmt.Sprintf("%s %d %q", comm, pid, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	return found
}

// requireDSProcesses fails unless dsProcesses finds the DaemonSet's
// libvirtd, virtlogd and vmpod while it runs, so that the uninstall's
// check for them can fail.
func (c *cluster) requireDSProcesses(daemons []int) {
	c.t.Helper()
	found := dsProcesses(daemons)
	for _, comm := range []string{"libvirtd ", "virtlogd ", "vmpod "} {
		if !slices.ContainsFunc(found, func(p string) bool { return strings.HasPrefix(p, comm) }) {
			c.t.Fatalf("the DaemonSet's %s is not among its processes %v: the uninstall's check for them could not fail", strings.TrimSpace(comm), found)
		}
	}
}

// nodeLeftovers lists what of vmpod is still on the node after the
// uninstall: the VM pods' footprints (vmFootprint), the DaemonSet's
// processes, mounts and files under the private root other than the
// node's own directories, bridge ports, images, containerd containers and
// shims. daemons are the host's libvirtd and virtlogd before the test.
func (c *cluster) nodeLeftovers(vms []vmPodRef, daemons []int) []string {
	var left []string
	for _, vm := range vms {
		for k, v := range c.vmFootprint(vm) {
			left = append(left, k+": "+v)
		}
	}
	for _, p := range dsProcesses(daemons) {
		left = append(left, "process "+p)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], c.root+"/") {
			left = append(left, "mount "+f[4])
		}
	}
	left = append(left, c.rootLeftovers()...)
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "ports on "+bridge+": "+strings.TrimSpace(string(out)))
	}
	if out, _ := c.ctr("images", "ls", "-q"); strings.Contains(out, "vmpod:") {
		left = append(left, "images "+strings.Join(strings.Fields(out), " "))
	}
	if out, _ := c.ctr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
		left = append(left, "containerd containers: "+strings.TrimSpace(out))
	}
	if pids := c.shimPIDs(); len(pids) > 0 {
		left = append(left, fmt.Sprintf("containerd shims %v", pids))
	}
	return left
}

// rootLeftovers lists what is under the private root (the DaemonSet's host
// paths) after the uninstall beyond empty directories of the node's own
// (nodeOwnPaths) and their parents: anything vmpod or libvirt wrote to a
// host path that docs/install.md's uninstall does not remove.
func (c *cluster) rootLeftovers() []string {
	allowed := map[string]bool{c.root: true}
	for _, p := range nodeOwnPaths {
		for d := p; d != "/"; d = filepath.Dir(d) {
			allowed[c.root+d] = true
		}
	}
	for _, p := range c.uninstallPaths() {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			allowed[c.root+d] = true
		}
	}
	var left []string
	filepath.WalkDir(c.root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			left = append(left, fmt.Sprintf("%s: %v", p, err))
			return nil
		}
		if !e.IsDir() || !allowed[p] {
			left = append(left, "under the private root: "+strings.TrimPrefix(p, c.root))
			if e.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	return left
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// machineCgroups lists libvirt's cgroups of a domain in every hierarchy:
// machine/qemu-<n>-<name>.libvirt-qemu, with the name cut short by
// libvirt (the first 32 characters of the ID are in it).
func machineCgroups(domain string) []string {
	if len(domain) > 38 {
		domain = domain[:38]
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/machine/qemu-*-" + domain + "*.libvirt-qemu")
	return cgs
}

// removeMachineCgroups removes the cgroups the DaemonSet's libvirtd made
// for the domains under the private root (left when a failed run killed
// their QEMUs); rmdir fails on a group that still has processes.
func (c *cluster) removeMachineCgroups() {
	var domains []string
	for _, dir := range []string{"etc/libvirt/qemu", "run/libvirt/qemu"} {
		files, _ := filepath.Glob(filepath.Join(c.root, dir, "vmpod-*.xml"))
		for _, f := range files {
			domains = append(domains, strings.TrimSuffix(filepath.Base(f), ".xml"))
		}
	}
	for _, d := range domains {
		for _, cg := range machineCgroups(d) {
			var dirs []string
			filepath.WalkDir(cg, func(p string, e os.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				os.Remove(dirs[i])
			}
		}
	}
}
