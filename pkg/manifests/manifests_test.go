package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/podspec"
)

const root = "../.."

// kinds maps "apiVersion kind" to a constructor of its typed object. A
// manifest of any other kind fails the test: add it here.
var kinds = map[string]func() any{
	"v1 Namespace":                func() any { return &corev1.Namespace{} },
	"v1 ServiceAccount":           func() any { return &corev1.ServiceAccount{} },
	"v1 ConfigMap":                func() any { return &corev1.ConfigMap{} },
	"v1 Pod":                      func() any { return &corev1.Pod{} },
	"v1 Service":                  func() any { return &corev1.Service{} },
	"v1 PersistentVolumeClaim":    func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1 DaemonSet":           func() any { return &appsv1.DaemonSet{} },
	"apps/v1 Deployment":          func() any { return &appsv1.Deployment{} },
	"node.k8s.io/v1 RuntimeClass": func() any { return &nodev1.RuntimeClass{} },
}

// doc is one decoded YAML document.
type doc struct {
	where string // file:index
	obj   any
}

// decodeStrict decodes one YAML document into its typed object: duplicate
// keys, unknown fields and wrong case are errors, as with kubectl's strict
// field validation.
func decodeStrict(data []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return nil, err
	}
	mk, ok := kinds[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return nil, errors.New("unknown apiVersion/kind " + tm.APIVersion + " " + tm.Kind + " (add it to kinds in this test)")
	}
	obj := mk()
	strict, err := sigsjson.UnmarshalStrict(j, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, errors.Join(strict...)
	}
	return obj, nil
}

// load decodes every document of every *.yaml/*.yml file under dir.
func load(t *testing.T, dir string) []doc {
	t.Helper()
	var docs []doc
	err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(root, path)
		r := k8syaml.NewYAMLReader(bufio.NewReader(f))
		for i := 0; ; i++ {
			data, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if len(bytes.TrimSpace(stripComments(data))) == 0 {
				continue
			}
			obj, err := decodeStrict(data)
			if err != nil {
				t.Errorf("%s, document %d: %v", rel, i, err)
				continue
			}
			docs = append(docs, doc{where: rel, obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatalf("no manifests under %s", dir)
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(append(out, l...), '\n')
		}
	}
	return out
}

func find[T any](docs []doc) []T {
	var out []T
	for _, d := range docs {
		if o, ok := d.obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for name, y := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {runtimeClasName: vmpod}\n",
		"wrong case":    "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {runtimeclassname: vmpod}\n",
		"duplicate key": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"unknown kind":  "apiVersion: v1\nkind: Podd\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict([]byte(y)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// podSpecs returns every pod spec in docs with where it comes from.
func podSpecs(docs []doc) map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *corev1.Pod:
			out[d.where+" Pod "+o.Name] = o.Spec
		case *appsv1.Deployment:
			out[d.where+" Deployment "+o.Name] = o.Spec.Template.Spec
		case *appsv1.DaemonSet:
			out[d.where+" DaemonSet "+o.Name] = o.Spec.Template.Spec
		}
	}
	return out
}

// podAnnotations returns every pod's (or pod template's) annotations.
func podAnnotations(docs []doc) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *corev1.Pod:
			out[d.where+" Pod "+o.Name] = o.Annotations
		case *appsv1.Deployment:
			out[d.where+" Deployment "+o.Name] = o.Spec.Template.Annotations
		}
	}
	return out
}

// TestDeploy checks what `kubectl apply -k deploy/` applies and what the
// example overlay applies (kustomize_test.go renders them).
func TestDeploy(t *testing.T) {
	for _, dir := range []string{"deploy", "deploy/overlays/example"} {
		t.Run(dir, func(t *testing.T) { checkDeploy(t, render(t, dir), true) })
	}
}

// checkDeploy checks a rendered deployment; kvm says whether it mounts
// /dev/kvm (deploy/components/no-kvm drops it).
func checkDeploy(t *testing.T, docs []doc, kvm bool) {
	ds := find[*appsv1.DaemonSet](docs)
	rcs := find[*nodev1.RuntimeClass](docs)
	if len(ds) != 1 || len(rcs) != 1 {
		t.Fatalf("deploy/ has %d DaemonSets and %d RuntimeClasses, want one each", len(ds), len(rcs))
	}
	d, rc := ds[0], rcs[0]
	const label = "vmpod.dev/enabled"
	if rc.Name != "vmpod" || rc.Handler != "vmpod" {
		t.Errorf("RuntimeClass %q with handler %q, want vmpod/vmpod", rc.Name, rc.Handler)
	}
	if rc.Scheduling == nil || rc.Scheduling.NodeSelector[label] != "true" {
		t.Errorf("RuntimeClass scheduling = %+v, want nodeSelector %s=true", rc.Scheduling, label)
	}
	if rc.Overhead == nil || rc.Overhead.PodFixed.Memory().IsZero() || rc.Overhead.PodFixed.Cpu().IsZero() {
		t.Errorf("RuntimeClass overhead = %+v, want podFixed memory and cpu", rc.Overhead)
	}
	if d.Namespace != "vmpod-system" || d.Spec.Template.Spec.NodeSelector[label] != "true" {
		t.Errorf("DaemonSet in %q with nodeSelector %v, want vmpod-system and %s=true", d.Namespace, d.Spec.Template.Spec.NodeSelector, label)
	}
	if rc.Scheduling != nil && !maps.Equal(rc.Scheduling.NodeSelector, d.Spec.Template.Spec.NodeSelector) {
		t.Errorf("the RuntimeClass selects nodes %v, the DaemonSet %v: VM pods would land where no vmpod runs", rc.Scheduling.NodeSelector, d.Spec.Template.Spec.NodeSelector)
	}
	spec := d.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID {
		t.Error("the DaemonSet needs hostNetwork and hostPID (QEMU must outlive the containers)")
	}

	containers := map[string]corev1.Container{}
	for _, c := range spec.Containers {
		containers[c.Name] = c
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged", c.Name)
		}
	}
	lv, vm := containers["libvirt"], containers["vmpod"]
	if lv.Name == "" || vm.Name == "" {
		t.Fatalf("DaemonSet containers %v, want libvirt and vmpod", slices.Collect(mapsKeys(containers)))
	}

	// The vmpod container's configuration: the ConfigMap loads through
	// pkg/config (unknown keys are errors there) and its paths are mounted.
	cm := configMap(t, docs, "vmpod-config")
	cfgPath := filepath.Join(t.TempDir(), "vmpod.toml")
	if err := os.WriteFile(cfgPath, []byte(cm.Data["vmpod.toml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatalf("vmpod-config's vmpod.toml: %v", err)
	}
	cfgMount := mountOf(vm, "config")
	if cfgMount == "" || !slices.Contains(vm.Command, filepath.Join(cfgMount, "vmpod.toml")) {
		t.Errorf("vmpod's command %q does not read the ConfigMap mounted at %q", vm.Command, cfgMount)
	}
	if got := mountOf(vm, "images"); got != cfg.ImageTranslationsDir {
		t.Errorf("vmpod-images is mounted at %q, image_translations_dir is %q", got, cfg.ImageTranslationsDir)
	}
	vmPaths := []string{cfg.StateDir, filepath.Dir(cfg.Socket), "/run/libvirt", "/var/log/pods", "/var/lib/kubelet/pods", "/run/netns", "/etc/cni/net.d", "/opt/cni/bin"}
	// The kubelet's checkpoint API has vmpod write archives there, and
	// restores read them there.
	vmPaths = append(vmPaths, cfg.CheckpointRestoreDirList()...)
	if kvm {
		vmPaths = append(vmPaths, "/dev/kvm")
	}
	for _, p := range vmPaths {
		if !hostPathMounted(spec, vm, p) {
			t.Errorf("vmpod container: host path %s is not mounted at the same path", p)
		}
	}
	for _, p := range []string{"/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/etc/libvirt/qemu", "/sys/fs/cgroup", cfg.StateDir, filepath.Dir(cfg.Socket), "/var/lib/kubelet/pods"} {
		if !hostPathMounted(spec, lv, p) {
			t.Errorf("libvirt container: host path %s is not mounted at the same path", p)
		}
	}
	for _, m := range vm.VolumeMounts {
		if m.MountPath == "/run/netns" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional) {
			t.Error("vmpod's /run/netns needs mountPropagation Bidirectional")
		}
	}
	probe := vm.ReadinessProbe
	if probe == nil || probe.Exec == nil || !slices.Contains(probe.Exec.Command, "ping") || !slices.Contains(probe.Exec.Command, cfg.Socket) {
		t.Errorf("vmpod's readiness probe %+v does not ping %s", probe, cfg.Socket)
	}

	// The image translation rules load without problems.
	dir := t.TempDir()
	for name, data := range configMap(t, docs, "vmpod-images").Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr := imagetranslation.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if p := tr.Problems(); len(p) > 0 {
		t.Errorf("vmpod-images: %v", p)
	}
	if len(tr.Files()) == 0 {
		t.Error("vmpod-images has no rules file")
	}
}

func TestExamples(t *testing.T) {
	docs := load(t, "examples")
	deploy := render(t, "deploy")
	rc := find[*nodev1.RuntimeClass](deploy)[0]

	dir := t.TempDir()
	for name, data := range configMap(t, deploy, "vmpod-images").Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr := imagetranslation.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))

	specs := podSpecs(docs)
	if len(specs) < 5 {
		t.Errorf("examples/ has %d pods and pod templates, want at least 5", len(specs))
	}
	for where, spec := range specs {
		if spec.RuntimeClassName == nil || *spec.RuntimeClassName != rc.Name {
			t.Errorf("%s: runtimeClassName is not %q", where, rc.Name)
		}
		for _, c := range spec.Containers {
			if !tr.Matches(c.Image) {
				t.Errorf("%s: image %q matches no rule in the vmpod-images ConfigMap", where, c.Image)
			}
			if c.Resources.Limits.Memory().Cmp(resource.MustParse("64Mi")) < 0 {
				t.Errorf("%s: container %s needs a memory limit of at least 64Mi (the guest's RAM)", where, c.Name)
			}
		}
	}

	// Only annotations vmpod knows, with values it accepts.
	for where, ann := range podAnnotations(docs) {
		if _, err := podspec.Parse(ann); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
}

func configMap(t *testing.T, docs []doc, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range find[*corev1.ConfigMap](docs) {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

// mountOf returns where c mounts the volume named vol ("" when it does not).
func mountOf(c corev1.Container, vol string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == vol {
			return m.MountPath
		}
	}
	return ""
}

// hostPathMounted tells whether c mounts host path p at p.
func hostPathMounted(spec corev1.PodSpec, c corev1.Container, p string) bool {
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == p && mountOf(c, v.Name) == p {
			return true
		}
	}
	return false
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
