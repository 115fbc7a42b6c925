package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmpod/vmpod/pkg/checkpoint"
	"github.com/vmpod/vmpod/pkg/libvirttools"
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
//
// The same archive pushed to a registry as a checkpoint image (one file
// under /checkpoint/) is pulled with crictl and restores into a third pod
// by its image reference, as the kubelet restores.
func TestCheckpointRestore(t *testing.T) {
	ckDir := t.TempDir()
	reg := startRegistry(t, "", "")
	e := newVMEnvWith(t, daemonOpts{extraEnv: []string{"VMPOD_CHECKPOINT_RESTORE_DIRS=" + ckDir, "VMPOD_REGISTRIES_CONF=" + registriesConf(t, reg)}})
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

	// An archive from a host whose QEMU has a machine type this one lacks
	// (a consistent archive: its manifest matches) is refused at create,
	// with libvirt's reason, and leaves nothing.
	alien := filepath.Join(ckDir, "alien.tar")
	rewriteArchive(t, archive, alien, func(dir string) {
		mem := filepath.Join(dir, "memory.save")
		x, err := libvirttools.SaveImageXML(mem)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`machine='[^']*'`)
		if !re.MatchString(x) {
			t.Fatalf("no machine type in the saved definition:\n%s", x)
		}
		if err := libvirttools.RewriteSaveImageXML(mem, re.ReplaceAllString(x, `machine='pc-q35-99.0'`)); err != nil {
			t.Fatal(err)
		}
	})
	fa := e.podConfigs("ckpt-alien", 0, nil)
	e.editCtr(fa, func(ctr map[string]any) { ctr["image"] = map[string]any{"image": alien} })
	alienPod := strings.TrimSpace(e.mustCrictl("runp", fa.pod))
	if out := e.failCrictl("create", alienPod, fa.ctr, fa.pod); !strings.Contains(out, "pc-q35-99.0") || !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("an archive with a machine type this host lacks: %s", out)
	} else {
		t.Logf("an archive with a machine type this host lacks: %s", strings.TrimSpace(out))
	}
	if got := virshDomains(t); got != domainsBefore {
		t.Fatalf("domains after the refused restore:\n%s\nbefore:\n%s", got, domainsBefore)
	}
	if out := e.mustCrictl("ps", "-a", "-q", "-p", alienPod); strings.TrimSpace(out) != "" {
		t.Fatalf("containers left in the pod: %s", out)
	}

	// The restore into a new pod.
	restored := restoreInto(t, e, "ckpt-b", archive, atCheckpoint)

	// The archive as a checkpoint image in a registry.
	ref := reg.addr + "/ckpt/a:1"
	reg.push(t, archive, "ckpt/a:1", "", "DISK_DIR=checkpoint")
	start = time.Now()
	imgID := strings.TrimPrefix(strings.TrimSpace(e.mustCrictl("pull", ref)), "Image is up to date for ")
	t.Logf("checkpoint image pulled in %v: %s", time.Since(start).Round(time.Millisecond), imgID)
	if info := e.mustCrictl("inspecti", ref); !regexp.MustCompile(`"format":\s*"checkpoint"`).MatchString(info) {
		t.Fatalf("crictl inspecti %s:\n%s", ref, info)
	}
	fromImage := restoreInto(t, e, "ckpt-c", ref, atCheckpoint)

	// All three VMs run, with their own counters.
	for _, id := range []string{ctrID, restored, fromImage} {
		if ci := e.inspect(id); ci.Status.State != "CONTAINER_RUNNING" {
			t.Fatalf("container %s is %s", id, ci.Status.State)
		}
	}
}

// restoreInto runs pod name with a container whose image is image (an
// archive's path or a checkpoint image) and returns the container, once
// its guest's counter continues from the checkpoint (it did not boot) and,
// after the agent moved its interface to the new pod's MAC and the guest
// renewed its lease, it has the new pod's IP and serves HTTP there.
func restoreInto(t *testing.T, e *vmEnv, name, image string, atCheckpoint int) string {
	t.Helper()
	f := e.podConfigs(name, 0, nil)
	e.editCtr(f, func(ctr map[string]any) { ctr["image"] = map[string]any{"image": image} })
	podID := strings.TrimSpace(e.mustCrictl("runp", f.pod))
	ip := e.podIP(podID)
	start := time.Now()
	id := strings.TrimSpace(e.mustCrictl("create", podID, f.ctr, f.pod))
	e.mustCrictl("start", id)
	t.Logf("container restored from %s created and started in %v", image, time.Since(start).Round(time.Millisecond))
	waitLog(t, f.logPath, counterRE, time.Minute)
	first := firstCounter(f.logPath)
	if first < atCheckpoint {
		t.Fatalf("the restored guest's counter starts at %d; it was at %d at the checkpoint", first, atCheckpoint)
	}
	t.Logf("the restored guest's counter starts at %d", first)
	if strings.Contains(readFile(t, f.logPath), "vmpod-test-guest ready") {
		t.Fatal("the restored guest booted")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _, _ := e.crictl("exec", "-s", id, "ip", "-4", "addr", "show")
		if strings.Contains(out, ip+"/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restored guest does not have its pod's IP %s:\n%s", ip, out)
		}
		time.Sleep(2 * time.Second)
	}
	if body, err := httpGet("http://" + ip + ":8080/"); err != nil {
		t.Fatalf("the restored guest's httpd on its new IP %s: %v (%q)", ip, err, body)
	}
	return id
}

// rewriteArchive writes dst: the checkpoint archive src with edit applied
// to its extracted members, and a manifest that matches them (what a
// consistent archive from another host looks like).
func rewriteArchive(t *testing.T, src, dst string, edit func(dir string)) {
	t.Helper()
	dir := t.TempDir()
	var meta json.RawMessage
	m, err := checkpoint.Extract(src, dir, checkpoint.Limits{
		Allowed: map[string]int64{"memory.save": 16 << 30, "root.qcow2": 16 << 30, "seed.iso": 64 << 20, "efivars.fd": 16 << 20},
		Check:   func(m *checkpoint.Manifest) error { meta = m.Meta; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	edit(dir)
	var members []checkpoint.Member
	for _, mi := range m.Members {
		members = append(members, checkpoint.Member{Name: mi.Name, Path: filepath.Join(dir, mi.Name)})
	}
	if err := checkpoint.Write(dst, meta, members); err != nil {
		t.Fatal(err)
	}
}
