package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// waitExecReady runs `true` in the container until it answers; it returns
// how long that took from since.
func (e *vmEnv) waitExecReady(ctrID string, since time.Time) time.Duration {
	e.t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		if _, _, err := e.crictl("exec", "-s", "--timeout", "10", ctrID, "true"); err == nil {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s: no exec within %v", ctrID, bootTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestWarmStart: the first pod annotated vmpod.dev/warm-start boots cold
// and becomes a template; the next one of the same namespace and spec
// is a restore of it: no boot in its log, its own hostname, its own IP.
func TestWarmStart(t *testing.T) {
	e := newVMEnv(t)
	ann := map[string]string{"vmpod.dev/warm-start": "true"}
	f1 := e.podConfigs("warm-a", 0, ann)
	start := time.Now()
	_, c1 := e.startVM(f1)
	cold := e.waitExecReady(c1, start)
	var tmpl []string
	deadline := time.Now().Add(2 * time.Minute)
	for len(tmpl) == 0 {
		tmpl, _ = filepath.Glob(filepath.Join(e.dir, "state", "templates", "*", "*", "meta.json"))
		if time.Now().After(deadline) {
			t.Fatal("no warm start template within 2 minutes of the first pod's agent answering")
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("cold: RunPodSandbox to exec answering %v; template %s", cold.Round(time.Millisecond), filepath.Dir(tmpl[0]))
	if ci := e.inspect(c1); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("the template's pod is %s", ci.Status.State)
	}
	if out := e.mustCrictl("exec", "-s", c1, "cat", "/etc/hostname"); strings.TrimSpace(out) != "warm-a" {
		t.Fatalf("the first pod's hostname after its template was saved: %q", out)
	}

	f2 := e.podConfigs("warm-b", 0, ann)
	start = time.Now()
	p2, c2 := e.startVM(f2)
	warm := e.waitExecReady(c2, start)
	t.Logf("warm: RunPodSandbox to exec answering %v (cold %v, ratio %.2f)", warm.Round(time.Millisecond), cold.Round(time.Millisecond), warm.Seconds()/cold.Seconds())
	if strings.Contains(readFile(t, f2.logPath), "vmpod-test-guest ready") {
		t.Fatal("the warm-started guest booted")
	}
	ip := e.podIP(p2)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		host, _, _ := e.crictl("exec", "-s", c2, "cat", "/etc/hostname")
		addr, _, _ := e.crictl("exec", "-s", c2, "ip", "-4", "addr", "show")
		if strings.TrimSpace(host) == "warm-b" && strings.Contains(addr, ip+"/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the warm-started guest: hostname %q, addresses\n%s\nwant warm-b and %s", host, addr, ip)
		}
		time.Sleep(2 * time.Second)
	}
	if body, err := httpGet("http://" + ip + ":8080/"); err != nil {
		t.Fatalf("the warm-started guest's httpd on %s: %v (%q)", ip, err, body)
	}
	// Its own VM generation ID.
	gen := regexp.MustCompile(`<genid>([^<]+)</genid>`)
	g1 := gen.FindStringSubmatch(run(t, "virsh", "dumpxml", "vmpod-"+c1))
	g2 := gen.FindStringSubmatch(run(t, "virsh", "dumpxml", "vmpod-"+c2))
	if g1 == nil || g2 == nil || g1[1] == g2[1] {
		t.Fatalf("generation IDs %v and %v", g1, g2)
	}
}
