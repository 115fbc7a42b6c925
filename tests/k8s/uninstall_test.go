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
	"/etc/cni/net.d", "/opt/cni/bin", "/run/netns"}

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

// nodeLeftovers lists what of vmpod is still on the node after the
// uninstall: processes, network namespaces, links, iptables rules,
// directories, images, cgroups. sandboxes and ctrs are the IDs vmpod gave
// the test's VM pods; qemus their QEMU pids; daemons the host's libvirtd
// and virtlogd before the test.
func (c *cluster) nodeLeftovers(sandboxes, ctrs []string, qemus, daemons []int) []string {
	var left []string
	for _, pid := range qemus {
		if isQEMU(pid) {
			left = append(left, fmt.Sprintf("QEMU %d", pid))
		}
	}
	// The DaemonSet's daemons ran in its containers' mount namespaces; a
	// libvirtd of the host's (even one started meanwhile) runs in ours.
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for _, pid := range hostDaemons() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ns != self && !slices.Contains(daemons, pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			left = append(left, fmt.Sprintf("process %d %q", pid, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], c.root+"/") {
			left = append(left, "mount "+f[4])
		}
	}
	for _, p := range c.uninstallPaths() {
		if _, err := os.Stat(c.root + p); err == nil {
			left = append(left, "directory "+p)
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	iptables, _ := exec.Command("iptables-save").Output()
	for _, id := range sandboxes {
		if ns := filepath.Join(c.root, "run/netns", "vmpod-"+id); exists(ns) {
			left = append(left, "netns "+ns)
		}
		if tap := "vmt" + id[:10]; strings.Contains(string(links), tap) {
			left = append(left, "tap "+tap)
		}
		if strings.Contains(string(iptables), id) {
			left = append(left, "iptables rules naming "+id)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "ports on "+bridge+": "+strings.TrimSpace(string(out)))
	}
	for _, id := range ctrs {
		if cgs := machineCgroups("vmpod-" + id); len(cgs) > 0 {
			left = append(left, fmt.Sprintf("cgroups %v", cgs))
		}
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
