package lifecycle_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

func warmPod(name, namespace string) *runtimeapi.PodSandboxConfig {
	p := pod(name)
	p.Metadata.Namespace = namespace
	p.Annotations = map[string]string{"vmpod.dev/warm-start": "true"}
	return p
}

func runWarm(t *testing.T, e *lifecycletest.Env, p *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	ctx := lifecycletest.Ctx(t)
	sb, err := e.Pods.RunSandbox(ctx, p, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sb, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestWarmStart(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	e.LV.SetAgent(func(name, cmd string) (string, error) { return `{"return":{}}`, nil })
	first := runWarm(t, e, warmPod("w1", "team"))
	rec := e.Record(t, first)
	if rec.WarmStart == nil || rec.Restore != nil {
		t.Fatalf("the first pod: %+v", rec)
	}
	x := e.DomainXML(t, rec.Domain)
	if x.GenID == nil {
		t.Fatal("a warm start VM has no generation ID")
	}
	tmpl := filepath.Join(e.Pods.TemplatesDir(), strings.TrimPrefix(rec.ImageRef, "sha256:"), rec.WarmStart.Key, "meta.json")
	eventually(t, "the template", func() bool { _, err := os.Stat(tmpl); return err == nil })
	if st := e.Record(t, first); st.State != "RUNNING" {
		t.Fatalf("the first pod's VM is %s after its template was saved", st.State)
	}

	second := runWarm(t, e, warmPod("w2", "team"))
	r2 := e.Record(t, second)
	if r2.Restore == nil || !strings.HasPrefix(r2.Restore.From, "warm start template ") || r2.Restore.Hostname != "w2" {
		t.Fatalf("the second pod was not warm started: %+v", r2)
	}
	x2 := e.DomainXML(t, r2.Domain)
	if x2.GenID == nil || x2.GenID.Value == "" || (x.GenID.Value != "" && x2.GenID.Value == x.GenID.Value) {
		t.Fatalf("generation IDs %v and %v", x.GenID, x2.GenID)
	}
	found := false
	for _, c := range e.LV.Calls() {
		found = found || c == "Restore "+r2.Domain+" paused"
	}
	if !found {
		t.Fatalf("no restore of %s: %v", r2.Domain, e.LV.Calls())
	}

	// Another namespace never gets this template.
	other := runWarm(t, e, warmPod("w3", "elsewhere"))
	if r3 := e.Record(t, other); r3.Restore != nil || r3.WarmStart == nil || r3.WarmStart.Key == rec.WarmStart.Key {
		t.Fatalf("a pod of another namespace: %+v", r3)
	}
	// Nor a pod with other env (the template's memory has the first's).
	p := warmPod("w4", "team")
	ctx := lifecycletest.Ctx(t)
	sb, err := e.Pods.RunSandbox(ctx, p, "")
	if err != nil {
		t.Fatal(err)
	}
	c := ctr("vm")
	c.Envs = []*runtimeapi.KeyValue{{Key: "SECRET", Value: []byte("other")}}
	id4, err := e.Pods.CreateContainer(ctx, sb, c)
	if err != nil {
		t.Fatal(err)
	}
	if r4 := e.Record(t, id4); r4.Restore != nil {
		t.Fatal("a pod with other env was started from the template")
	}

	// The template goes with its image.
	if err := e.Pods.RemoveTemplates(rec.ImageRef); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmpl); !os.IsNotExist(err) {
		t.Fatalf("template after its image's removal: %v", err)
	}
}

func TestWarmStartOffByDefault(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	_, id := startVM(t, e, "cold")
	if rec := e.Record(t, id); rec.WarmStart != nil {
		t.Fatalf("warm start without the annotation: %+v", rec.WarmStart)
	}
	if x := e.DomainXML(t, e.Record(t, id).Domain); x.GenID != nil {
		t.Fatal("a generation ID without warm start")
	}
}
