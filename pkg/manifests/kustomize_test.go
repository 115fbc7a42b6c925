package manifests_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	nodev1 "k8s.io/api/node/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// render builds the kustomization in dir as `kubectl apply -k` does and
// decodes every resource it yields strictly (kustomize itself passes
// unknown fields through).
func render(t *testing.T, dir string) []doc {
	t.Helper()
	docs, err := renderDir(filepath.Join(root, dir))
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	if len(docs) == 0 {
		t.Fatalf("kustomize %s: no resources", dir)
	}
	return docs
}

func renderDir(dir string) ([]doc, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var docs []doc
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		obj, err := decodeStrict(y)
		if err != nil {
			return nil, &renderError{r.CurId().String(), err}
		}
		docs = append(docs, doc{where: filepath.Base(dir) + " " + r.CurId().String(), obj: obj})
	}
	return docs, nil
}

type renderError struct {
	id  string
	err error
}

func (e *renderError) Error() string { return e.id + ": " + e.err.Error() }

// TestKustomizationsCoverDeploy: every manifest under deploy/ is a
// resource or a patch of a kustomization there, so none is left out of
// what `kubectl apply -k` applies (and out of these tests).
func TestKustomizationsCoverDeploy(t *testing.T) {
	named := map[string]bool{}
	var manifests, kustomizations []string
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		if d.Name() != "kustomization.yaml" {
			manifests = append(manifests, p)
			return nil
		}
		kustomizations = append(kustomizations, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var k types.Kustomization
		if err := yaml.UnmarshalStrict(b, &k); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		for _, r := range k.Resources {
			named[filepath.Join(filepath.Dir(p), r)] = true
		}
		for _, pt := range k.Patches {
			if pt.Path != "" {
				named[filepath.Join(filepath.Dir(p), pt.Path)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kustomizations) < 3 {
		t.Errorf("kustomizations under deploy/: %v, want deploy/, deploy/base and deploy/overlays/example", kustomizations)
	}
	for _, m := range manifests {
		if !named[m] {
			t.Errorf("%s is in no kustomization's resources or patches: kubectl apply -k would leave it out", m)
		}
	}
	for _, k := range kustomizations {
		if b, _ := os.ReadFile(k); strings.Contains(string(b), "\nkind: Component\n") {
			continue // built only as part of an overlay (TestNoKVMComponent)
		}
		if _, err := renderDir(filepath.Dir(k)); err != nil {
			t.Errorf("kustomize %s: %v", filepath.Dir(k), err)
		}
	}
}

// TestNoKVMComponent: the example overlay with deploy/components/no-kvm
// has no /dev/kvm volume or mount left, and is otherwise the deployment
// TestDeploy checks.
func TestNoKVMComponent(t *testing.T) {
	dir := t.TempDir()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(abs, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + rel("deploy/overlays/example") +
		"\ncomponents:\n- " + rel("deploy/components/no-kvm") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	docs, err := renderDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := find[*appsv1.DaemonSet](docs)[0].Spec.Template.Spec
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/dev/kvm" {
			t.Errorf("volume %s still mounts /dev/kvm", v.Name)
		}
	}
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/dev/kvm" || m.Name == "dev-kvm" {
				t.Errorf("container %s still mounts %s (%s)", c.Name, m.MountPath, m.Name)
			}
		}
	}
	checkDeploy(t, docs, false)
}

// TestExampleOverlay: the overlay changes the image of both containers and
// the nodes of the DaemonSet and the RuntimeClass together.
func TestExampleOverlay(t *testing.T) {
	base, overlay := render(t, "deploy"), render(t, "deploy/overlays/example")
	b, err := os.ReadFile(filepath.Join(root, "deploy/overlays/example/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Images) != 1 {
		t.Fatalf("the example overlay sets %d images, want 1", len(k.Images))
	}
	want := k.Images[0].NewName + ":" + k.Images[0].NewTag
	images := func(docs []doc) []string {
		var out []string
		for _, c := range find[*appsv1.DaemonSet](docs)[0].Spec.Template.Spec.Containers {
			out = append(out, c.Image)
		}
		return out
	}
	if got := images(base); len(got) != 2 || got[0] != got[1] || got[0] != k.Images[0].Name+":latest" {
		t.Errorf("base images %v, want %s:latest for both containers (one image serves both)", got, k.Images[0].Name)
	}
	if got := images(overlay); !slices.Equal(got, []string{want, want}) {
		t.Errorf("overlay images %v, want %s for both containers", got, want)
	}
	sel := func(docs []doc) map[string]string {
		return find[*nodev1.RuntimeClass](docs)[0].Scheduling.NodeSelector
	}
	if len(sel(overlay)) <= len(sel(base)) {
		t.Errorf("the overlay's node selector %v adds nothing to the base's %v", sel(overlay), sel(base))
	}
}

// TestKustomizeRejectsUnknownFields: a typo in a kustomization is an
// error, not a silently ignored setting.
func TestKustomizeRejectsUnknownFields(t *testing.T) {
	dir := t.TempDir()
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresourcez:\n- a.yaml\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := renderDir(dir); err == nil || !strings.Contains(err.Error(), "resourcez") {
		t.Errorf("kustomize with a misspelt field: %v, want an error naming it", err)
	}
}
