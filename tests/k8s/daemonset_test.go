package k8se2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The DaemonSet runs from deploy/overlays/example under an overlay of the
// test's own (writeOverlay). Its host paths are the ones a real node uses,
// moved under the test's private root: this machine runs a libvirtd of its
// own (/run/libvirt) for other tests, and a second libvirtd on the same
// directories would take its socket, and its vmpod, recovering, would
// destroy the other tests' vmpod-* domains. So the DaemonSet's libvirtd
// and vmpod see only root/run/libvirt, root/var/lib/vmpod, ...; the host's
// libvirtd is never stopped or touched (the test checks its pid at the
// end). Kernel interfaces (/sys/fs/cgroup, /dev/kvm) are the node's; the kubelet's directories and the CNI configuration are the
// test's kubelet's and the test's network.
const (
	dsNamespace = "vmpod-system"
	dsName      = "vmpod"
	dsSelector  = "app.kubernetes.io/name=vmpod"
	nodeLabel   = "vmpod.dev/enabled" // docs/install.md, step 2
)

// image is a vmpod image archive written by hack/build-image.sh.
type image struct {
	archive string
	name    string // as containerd names it: docker.io/library/vmpod:<tag>
	tag     string
}

// readImage reads the image's name from the archive's index.json.
func readImage(archive string) (image, error) {
	f, err := os.Open(archive)
	if err != nil {
		return image{}, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return image{}, fmt.Errorf("%s: no index.json: %v", archive, err)
		}
		if h.Name != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct{ Annotations map[string]string }
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
			return image{}, fmt.Errorf("%s: index.json: %v", archive, err)
		}
		if len(idx.Manifests) != 1 {
			return image{}, fmt.Errorf("%s: %d images, want 1", archive, len(idx.Manifests))
		}
		a := idx.Manifests[0].Annotations
		name, tag := a["io.containerd.image.name"], a["org.opencontainers.image.ref.name"]
		if name == "" || !strings.HasSuffix(name, ":"+tag) {
			return image{}, fmt.Errorf("%s: image name %q, tag %q", archive, name, tag)
		}
		return image{archive: archive, name: name, tag: tag}, nil
	}
}

// setupRoot makes the private root a shared mount of its own: the
// DaemonSet's Bidirectional and HostToContainer mounts need a shared mount
// at their source, as / is one on a node under systemd (and as `ip netns`
// makes /run/netns one).
func (c *cluster) setupRoot() {
	c.t.Helper()
	if err := os.MkdirAll(c.root, 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.mustRun("mount", "--bind", c.root, c.root)
	c.mustRun("mount", "--make-rshared", c.root)
}

// importImage is the install's step 1 on a node without a registry.
func (c *cluster) importImage(img image) {
	c.t.Helper()
	if out, err := c.ctr("images", "import", img.archive); err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
}

// labelNode is the install's step 2.
func (c *cluster) labelNode(set bool) {
	c.t.Helper()
	if set {
		c.mustKubectl("label", "node", nodeName, nodeLabel+"=true")
	} else {
		c.mustKubectl("label", "node", nodeName, nodeLabel+"-")
	}
}

// overlayDir is the test's overlay of deploy/overlays/example.
func (c *cluster) overlayDir() string { return c.path("overlay") }

// writeOverlay writes the test's kustomization over
// deploy/overlays/example: the image tag, the private root, the test's
// kubelet directories and network, TCG, the test guest's image rule, and
// the test's registry for checkpoint images.
// What a user's overlay sets (image, nodes) comes from the example.
func (c *cluster) writeOverlay(tag, guestURL string) {
	c.t.Helper()
	example := filepath.Join(repo, "deploy/overlays/example")
	var k struct {
		Images []struct{ Name, NewName, NewTag string }
	}
	b, err := os.ReadFile(filepath.Join(example, "kustomization.yaml"))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil || len(k.Images) != 1 {
		c.t.Fatalf("deploy/overlays/example/kustomization.yaml: images %+v, %v; want one", k.Images, err)
	}
	ds := c.renderedDaemonSet(example)
	volumes := []map[string]any{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		p := v.HostPath.Path
		switch {
		case p == "/etc/cni/net.d":
			p = c.cniConf
		case p == "/opt/cni/bin":
			p = "/usr/lib/cni" // Debian's plugins
		case strings.HasPrefix(p, "/sys/"), strings.HasPrefix(p, "/dev/"):
			continue // the node's kernel
		default:
			p = c.root + p
		}
		volumes = append(volumes, map[string]any{"name": v.Name, "hostPath": map[string]any{"path": p}})
	}
	// The test's kubelet keeps pods and logs elsewhere than a node's does,
	// and the CNI config's host-local store is the test's: mount them at
	// the paths the kubelet and the config give.
	kubeletPods := filepath.Join(c.kubeletRoot, "pods")
	for name, p := range map[string]string{"test-kubelet-pods": kubeletPods, "test-pod-logs": c.podLogs, "test-ipam": c.ipamDir,
		"test-kubelet-checkpoints": c.checkpointDir()} {
		os.MkdirAll(p, 0o755)
		volumes = append(volumes, map[string]any{"name": name, "hostPath": map[string]any{"path": p, "type": "Directory"}})
	}
	// vmpod pulls checkpoint images from the test's plain-HTTP registry
	// (checkpoint_test.go): a registries.conf in a ConfigMap of the
	// overlay's, as a node's administrator would ship it.
	volumes = append(volumes, map[string]any{"name": "test-registries", "configMap": map[string]any{"name": registriesConfigMap}})
	hostToContainer := map[string]any{"name": "test-kubelet-pods", "mountPath": kubeletPods, "mountPropagation": "HostToContainer"}
	// vmpod's state directory at the path it has on the host, in both
	// containers (QEMU opens the disks at the paths vmpod gives), as on a
	// node, where /var/lib/vmpod is /var/lib/vmpod: the kubelet stats the
	// containers' writable layers at the paths vmpod reports, and
	// /stats/summary fails when one does not exist on the host.
	stateDir := c.root + "/var/lib/vmpod"
	stateMount := map[string]any{"name": "var-lib-vmpod", "mountPath": stateDir}
	patch := map[string]any{
		"apiVersion": "apps/v1", "kind": "DaemonSet",
		"metadata": map[string]any{"name": dsName, "namespace": dsNamespace},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"volumes": volumes,
			"containers": []map[string]any{
				{"name": "libvirt", "volumeMounts": []map[string]any{hostToContainer, stateMount}},
				{"name": "vmpod",
					// Nested KVM is broken here: guests run under TCG. The
					// test's kubelet uses cgroupfs.
					"env": []map[string]any{{"name": "VMPOD_ACCELERATOR", "value": "tcg"}, {"name": "VMPOD_TCG_TB_CACHE_MIB", "value": "256"},
						{"name": "VMPOD_LOG_LEVEL", "value": "debug"}, {"name": "VMPOD_CGROUP_DRIVER", "value": "cgroupfs"},
						{"name": "VMPOD_STATE_DIR", "value": stateDir},
						{"name": "VMPOD_CHECKPOINT_RESTORE_DIRS", "value": c.checkpointDir()},
						{"name": "VMPOD_REGISTRIES_CONF", "value": registriesMount + "/registries.conf"}},
					"volumeMounts": []map[string]any{hostToContainer, stateMount,
						{"name": "test-pod-logs", "mountPath": c.podLogs}, {"name": "test-ipam", "mountPath": c.ipamDir},
						{"name": "test-kubelet-checkpoints", "mountPath": c.checkpointDir()},
						{"name": "test-registries", "mountPath": registriesMount, "readOnly": true}}},
			},
		}}},
	}
	images := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "vmpod-images", "namespace": dsNamespace},
		"data":     map[string]any{"e2e.toml": guestRule(guestURL)},
	}
	rel, err := filepath.Rel(c.overlayDir(), example) // kustomize refuses absolute paths
	if err != nil {
		c.t.Fatal(err)
	}
	registries := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": registriesConfigMap, "namespace": dsNamespace},
		"data":     map[string]any{"registries.conf": c.registriesConf()},
	}
	kz := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
		"resources": []string{rel, "registries.yaml"},
		"images":    []map[string]any{{"name": k.Images[0].NewName, "newName": "vmpod", "newTag": tag}},
		"patches":   []map[string]any{{"path": "node.yaml"}, {"path": "images.yaml"}},
	}
	// A machine without /dev/kvm uses the component docs/install.md gives
	// for such nodes.
	if st, err := os.Stat("/dev/kvm"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		noKVM, err := filepath.Rel(c.overlayDir(), filepath.Join(repo, "deploy/components/no-kvm"))
		if err != nil {
			c.t.Fatal(err)
		}
		kz["components"] = []string{noKVM}
	}
	for name, obj := range map[string]any{"kustomization.yaml": kz, "node.yaml": patch, "images.yaml": images, "registries.yaml": registries} {
		b, err := yaml.Marshal(obj)
		if err != nil {
			c.t.Fatal(err)
		}
		c.write(filepath.Join(c.overlayDir(), name), string(b))
	}
}

// guestRule is the image translation rule naming the test guest, for
// vmpod (the vmpod-images ConfigMap) and the router alike.
func guestRule(url string) string {
	return fmt.Sprintf("[[translations]]\nname = %q\nurl = %q\n", vmImage, url)
}

// renderedDaemonSet runs kubectl kustomize on dir and returns the
// DaemonSet.
func (c *cluster) renderedDaemonSet(dir string) *appsv1.DaemonSet {
	c.t.Helper()
	out := c.mustKubectl("kustomize", dir)
	r := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			c.t.Fatalf("kubectl kustomize %s: no DaemonSet", dir)
		}
		if err != nil {
			c.t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte("kind: DaemonSet")) {
			continue
		}
		var ds appsv1.DaemonSet
		if err := yaml.UnmarshalStrict(doc, &ds); err != nil {
			c.t.Fatal(err)
		}
		return &ds
	}
}

// applyDeploy is the install's step 3 (and an upgrade's): kubectl apply -k
// and wait for the DaemonSet's rollout.
func (c *cluster) applyDeploy() {
	c.t.Helper()
	c.mustKubectl("apply", "-k", c.overlayDir())
	c.waitRollout()
}

func (c *cluster) waitRollout() {
	c.t.Helper()
	if out, err := c.kubectl(6*time.Minute, "-n", dsNamespace, "rollout", "status", "daemonset/"+dsName, "--timeout=5m"); err != nil {
		c.t.Fatalf("%v\n%s\nvmpod:\n%s\nlibvirt:\n%s", err, out, tail(c.log("vmpod"), 30), tail(c.log("libvirt"), 30))
	}
}

// dsPod returns the DaemonSet's one pod, waiting until there is one
// (other than the pod named old) with both containers ready.
func (c *cluster) dsPod(old string) *corev1.Pod {
	c.t.Helper()
	var pod corev1.Pod
	c.waitFor("the DaemonSet's pod ready", "vmpod", 5*time.Minute, func() error {
		out, err := c.kubectl(30*time.Second, "-n", dsNamespace, "get", "pods", "-l", dsSelector, "-o", "json")
		if err != nil {
			return err
		}
		var list corev1.PodList
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return err
		}
		var ready []corev1.Pod
		for _, p := range list.Items {
			if p.Name != old && p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p)
			}
		}
		if len(list.Items) != 1 || len(ready) != 1 {
			return fmt.Errorf("%d pods, %d ready (not %q)", len(list.Items), len(ready), old)
		}
		pod = ready[0]
		return nil
	})
	return &pod
}

// installRouter is the install's step 4 from a node's containerd: copy
// vmpod out of the image (docs/install.md).
func (c *cluster) installRouter(img image) {
	c.t.Helper()
	mnt := c.path("image-mnt")
	os.MkdirAll(mnt, 0o755)
	if out, err := c.ctr("images", "mount", img.name, mnt); err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "usr/local/bin/vmpod"))
	if out, uerr := c.ctr("images", "unmount", "--rm", mnt); uerr != nil {
		c.t.Fatalf("%v\n%s", uerr, out)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(c.routerBin), 0o755)
	if err := os.WriteFile(c.routerBin, b, 0o755); err != nil {
		c.t.Fatal(err)
	}
}

// startRouter runs the router as deploy/systemd/vmpod-router.service does,
// its host paths mapped to the test's, with the test guest's image rule
// (the optional --image-translations-dir the unit describes).
func (c *cluster) startRouter() {
	c.t.Helper()
	argv := c.routerCommand()
	os.MkdirAll(c.translations, 0o755)
	argv = append(argv, "--image-translations-dir", c.translations, "--log-level", "debug")
	c.start("router", nil, argv...)
	c.waitFor("router", "router", time.Minute, func() error {
		_, err := run(10*time.Second, c.routerBin, "ping", "--socket", c.routerSock)
		return err
	})
}

// routerCommand is the unit's ExecStart with every host path mapped; a
// path the test does not know fails the test, so the unit and the test
// cannot drift apart.
func (c *cluster) routerCommand() []string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "deploy/systemd/vmpod-router.service"))
	if err != nil {
		c.t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "\\\n", " ")
	paths := map[string]string{
		"/usr/local/bin/vmpod":                   c.routerBin,
		"/run/vmpod/router.sock":                 c.routerSock,
		"unix:///run/containerd/containerd.sock": "unix://" + c.containerdSock,
		"unix:///run/vmpod/vmpod.sock":           "unix://" + c.vmpodSock,
	}
	for _, l := range strings.Split(unit, "\n") {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecStart=")
		if !ok {
			continue
		}
		var argv []string
		for _, a := range strings.Fields(cmd) {
			if m, ok := paths[a]; ok {
				a = m
			} else if strings.Contains(a, "/") {
				c.t.Fatalf("vmpod-router.service: ExecStart names %s, which the test does not map to its own", a)
			}
			argv = append(argv, a)
		}
		return argv
	}
	c.t.Fatal("vmpod-router.service has no ExecStart")
	return nil
}
