package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var counterRE = regexp.MustCompile(`vmpod-counter (\d+)`)

// lastCounter is the highest counter value in a CRI log, -1 for none.
func lastCounter(t *testing.T, path string) int {
	t.Helper()
	last := -1
	b, _ := os.ReadFile(path)
	for _, m := range counterRE.FindAllStringSubmatch(joinPartialRecords(string(b)), -1) {
		if n, _ := strconv.Atoi(m[1]); n > last {
			last = n
		}
	}
	return last
}

// firstCounter is the first counter value in a CRI log, -1 for none.
func firstCounter(path string) int {
	b, _ := os.ReadFile(path)
	m := counterRE.FindStringSubmatch(joinPartialRecords(string(b)))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestCheckpointRestore: crictl checkpoint --export of a running VM pod
// whose guest runs a counter; the VM runs on; a new pod created from the
// archive's path continues the counter (the process survived in the
// guest's memory) and answers on its own pod IP.
func TestCheckpointRestore(t *testing.T) {
	ckDir := t.TempDir()
	e := newVMEnvWith(t, daemonOpts{extraEnv: []string{"VMPOD_CHECKPOINT_RESTORE_DIRS=" + ckDir}})
	f, ctrID := e.bootVM("ckpt-a", nil)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 30*time.Second)
	e.mustCrictl("exec", "-s", ctrID, "sh", "-c",
		`i=0; while :; do echo "vmpod-counter $i" >/dev/ttyS0; i=$((i+1)); sleep 1; done </dev/null >/dev/null 2>&1 &`)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-counter 3\b`), time.Minute)

	archive := filepath.Join(ckDir, "ckpt-a.tar")
	start := time.Now()
	e.mustCrictl("checkpoint", "--export="+archive, ctrID)
	atCheckpoint := lastCounter(t, f.logPath)
	t.Logf("checkpoint written in %v, counter at %d", time.Since(start).Round(time.Millisecond), atCheckpoint)
	st, err := os.Stat(archive)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive %s: %v %v", archive, st, err)
	}
	t.Logf("archive: %.1f MiB", float64(st.Size())/(1<<20))
	// The original runs on and keeps counting.
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("the checkpointed container is %s", ci.Status.State)
	}
	waitLog(t, f.logPath, regexp.MustCompile(fmt.Sprintf(`vmpod-counter %d\b`, atCheckpoint+3)), time.Minute)

	// A tampered archive is refused and leaves nothing.
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(ckDir, "bad.tar")
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fb := e.podConfigs("ckpt-bad", 0, nil)
	e.editCtr(fb, func(ctr map[string]any) { ctr["image"] = map[string]any{"image": bad} })
	badPod := strings.TrimSpace(e.mustCrictl("runp", fb.pod))
	domainsBefore := virshDomains(t)
	if out := e.failCrictl("create", badPod, fb.ctr, fb.pod); !strings.Contains(out, "sha256") && !strings.Contains(out, "checkpoint") {
		t.Fatalf("tampered archive: %s", out)
	}
	if got := virshDomains(t); got != domainsBefore {
		t.Fatalf("domains after the refused restore:\n%s\nbefore:\n%s", got, domainsBefore)
	}
	if out := e.mustCrictl("ps", "-a", "-q", "-p", badPod); strings.TrimSpace(out) != "" {
		t.Fatalf("containers left in the pod: %s", out)
	}

	// The restore into a new pod.
	fr := e.podConfigs("ckpt-b", 0, nil)
	e.editCtr(fr, func(ctr map[string]any) { ctr["image"] = map[string]any{"image": archive} })
	podB := strings.TrimSpace(e.mustCrictl("runp", fr.pod))
	ipB := e.podIP(podB)
	start = time.Now()
	restored := strings.TrimSpace(e.mustCrictl("create", podB, fr.ctr, fr.pod))
	e.mustCrictl("start", restored)
	t.Logf("restored container created and started in %v", time.Since(start).Round(time.Millisecond))
	waitLog(t, fr.logPath, counterRE, time.Minute)
	first := firstCounter(fr.logPath)
	if first < atCheckpoint {
		t.Fatalf("the restored guest's counter starts at %d; it was at %d at the checkpoint", first, atCheckpoint)
	}
	t.Logf("the restored guest's counter starts at %d", first)
	if strings.Contains(readFile(t, fr.logPath), "vmpod-test-guest ready") {
		t.Fatal("the restored guest booted")
	}
	// Its new address, once the agent moved it to the new pod's MAC and
	// the guest renewed its lease.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _, _ := e.crictl("exec", "-s", restored, "ip", "-4", "addr", "show")
		if strings.Contains(out, ipB+"/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restored guest does not have its pod's IP %s:\n%s", ipB, out)
		}
		time.Sleep(2 * time.Second)
	}
	if body, err := httpGet("http://" + ipB + ":8080/"); err != nil {
		t.Fatalf("the restored guest's httpd on its new IP %s: %v (%q)", ipB, err, body)
	}
	// Both VMs run, with their own counters.
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("the original is %s", ci.Status.State)
	}
}
