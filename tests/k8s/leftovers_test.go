package k8se2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vmpodIDs returns the VM pod's sandbox and container IDs in vmpod.
func (c *cluster) vmpodIDs(t *testing.T) (sandbox, ctr string) {
	t.Helper()
	out, err := c.crictl(c.vmpodSock, "pods", "--name", vmPod, "-q")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("vmpod's pods named %s: %v %q", vmPod, err, out)
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

// leftovers lists what of the two pods is still on the host.
func (c *cluster) leftovers(vmSandbox, vmCtr, ctrSandbox, ctrNetns string) []string {
	var left []string
	// Asked of the DaemonSet's libvirtd, on its socket under the private root.
	uri := "qemu:///system?socket=" + filepath.Join(c.root, "run/libvirt/libvirt-sock")
	if out, err := run(30*time.Second, "virsh", "-c", uri, "dominfo", "vmpod-"+vmCtr); err == nil {
		left = append(left, "libvirt domain vmpod-"+vmCtr+": "+out)
	} else if !strings.Contains(err.Error(), "failed to get domain") {
		left = append(left, "virsh dominfo: "+err.Error())
	}
	for _, p := range []string{filepath.Join(c.root, "run/netns/vmpod-"+vmSandbox), ctrNetns} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "netns "+p)
		}
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
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		for _, id := range []string{vmSandbox, ctrSandbox} {
			if strings.Contains(string(out), id) {
				left = append(left, "iptables rules naming "+id)
			}
		}
	}
	return left
}
