package k8se2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// vmpodIDs returns a VM pod's sandbox and container IDs in vmpod.
func (c *cluster) vmpodIDs(t *testing.T, pod string) (sandbox, ctr string) {
	t.Helper()
	out, err := c.crictl(c.vmpodSock, "pods", "--name", "^"+pod+"$", "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("vmpod's pods named %s: %v %q", pod, err, out)
	}
	sandbox = strings.TrimSpace(out)
	out, err = c.crictl(c.vmpodSock, "ps", "-a", "--pod", sandbox, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("vmpod's containers of %s: %v %q", sandbox, err, out)
	}
	return sandbox, strings.TrimSpace(out)
}

// containerdSandbox returns the container pod's sandbox ID in containerd
// and the path of its network namespace.
func (c *cluster) containerdSandbox(t *testing.T) (id, netns string) {
	t.Helper()
	out, err := c.crictl(c.containerdSock, "pods", "--name", ctrPod, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("containerd's pods named %s: %v %q", ctrPod, err, out)
	}
	id = strings.TrimSpace(out)
	out, err = c.crictl(c.containerdSock, "inspectp", "-o", "json", id)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	for _, ns := range v.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns == "" {
		t.Fatalf("containerd's sandbox %s has no network namespace path:\n%s", id, out)
	}
	return id, netns
}

// vmPodRef names one VM pod's objects on the node.
type vmPodRef struct {
	sandbox, ctr string // vmpod's IDs
	ip           string // the pod IP
	qemu         int    // QEMU's pid
}

// footprintKinds are the things a running VM pod has on the node. The test
// finds every one of them while the VM runs (so that each check below can
// fail) and none after the pod is deleted or vmpod uninstalled.
var footprintKinds = []string{"domain", "qemu", "netns", "tap", "iptables", "cgroups", "vm cgroup", "ipam", "state"}

// vmFootprint lists which of footprintKinds the VM pod vm has on the node,
// with what was found.
func (c *cluster) vmFootprint(vm vmPodRef) map[string]string {
	found := map[string]string{}
	dom := "vmpod-" + vm.ctr
	// Asked of the DaemonSet's libvirtd while it runs; after the uninstall,
	// its domain files.
	if exists(filepath.Join(c.root, "run/libvirt/libvirt-sock")) {
		if out, err := c.virsh("domstate", dom); err == nil {
			found["domain"] = dom + " " + strings.TrimSpace(out)
		} else if !strings.Contains(err.Error(), "failed to get domain") {
			found["domain"] = "virsh domstate: " + err.Error()
		}
	} else {
		for _, dir := range []string{"etc/libvirt/qemu", "run/libvirt/qemu"} {
			if p := filepath.Join(c.root, dir, dom+".xml"); exists(p) {
				found["domain"] = p
			}
		}
	}
	if isQEMU(vm.qemu) {
		found["qemu"] = fmt.Sprint("pid ", vm.qemu)
	}
	netns := filepath.Join(c.root, "run/netns", "vmpod-"+vm.sandbox)
	if exists(netns) {
		found["netns"] = netns
	}
	// The VM's taps are made in the host's namespace and moved into the
	// pod's once QEMU has them.
	tap := "vmt" + vm.sandbox[:10]
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), tap) {
		found["tap"] = tap + " in the host's namespace"
	} else if found["netns"] != "" {
		if out, _ := exec.Command("nsenter", "--net="+netns, "ip", "-o", "link", "show").Output(); strings.Contains(string(out), tap) {
			found["tap"] = tap + " in the pod's namespace"
		}
	}
	// The portmap plugin's rules for the pod's hostPort carry its ID.
	for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
		if out, _ := exec.Command(save).Output(); strings.Contains(string(out), vm.sandbox) {
			found["iptables"] += save + ": rules naming the sandbox "
		}
	}
	if cgs := machineCgroups(dom); len(cgs) > 0 {
		found["cgroups"] = strings.Join(cgs, " ")
	}
	// vmpod's cgroup of the VM, below its pod's (the kubelet's, under its
	// cgroupRoot; burstable and best-effort pods one level deeper).
	for _, pattern := range []string{"/kubepods/*/vmpod-", "/kubepods/*/*/vmpod-"} {
		if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupTop + pattern + vm.ctr); len(cgs) > 0 {
			found["vm cgroup"] += strings.Join(cgs, " ")
		}
	}
	if p := filepath.Join(c.ipamDir, netName, vm.ip); vm.ip != "" && exists(p) {
		found["ipam"] = "host-local reservation " + p
	}
	if p := filepath.Join(c.root, "var/lib/vmpod/containers", vm.ctr); exists(p) {
		found["state"] = p
	}
	return found
}

// requireFootprint fails the test unless the running VM pod has every one
// of footprintKinds on the node but except (a kind the pod cannot have).
func (c *cluster) requireFootprint(vm vmPodRef, except string) {
	c.t.Helper()
	found := c.vmFootprint(vm)
	for _, k := range footprintKinds {
		if found[k] == "" && k != except {
			c.t.Fatalf("the running VM pod has no %s on the node (found %v): the check for a leftover %s could not fail", k, found, k)
		}
	}
	c.t.Logf("the running VM pod's footprint: %v", found)
}

// leftovers lists what of the VM pods and the container pod is still on
// the host.
func (c *cluster) leftovers(vms []vmPodRef, ctrSandbox, ctrNetns string) []string {
	var left []string
	for _, vm := range vms {
		for k, v := range c.vmFootprint(vm) {
			left = append(left, k+": "+v)
		}
	}
	if _, err := os.Stat(ctrNetns); err == nil {
		left = append(left, "netns "+ctrNetns)
	}
	// containerd keeps the DaemonSet's pod; none of the default namespace.
	if out, _ := c.crictl(c.containerdSock, "ps", "-a", "-q", "--label", "io.kubernetes.pod.namespace=default"); strings.TrimSpace(out) != "" {
		left = append(left, "containerd containers: "+strings.TrimSpace(out))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "ports on "+bridge+": "+strings.TrimSpace(string(out)))
	}
	if ents, _ := os.ReadDir(filepath.Join(c.ipamDir, netName)); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "10.") {
				left = append(left, "host-local reservation "+e.Name())
			}
		}
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil && strings.Contains(string(out), ctrSandbox) {
		left = append(left, "iptables rules naming "+ctrSandbox)
	}
	return left
}
