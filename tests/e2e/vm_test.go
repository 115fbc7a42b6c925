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
)

var readyRE = regexp.MustCompile(`stdout F vmpod-test-guest ready`)

func TestVMLifecycle(t *testing.T) {
	e := newVMEnv(t)
	f := e.podConfigs("life", 0, map[string]string{"vmpod.dev/vcpus": "2", "vmpod.dev/memory": "300Mi"})
	podID, ctrID := e.startVM(f)

	// The serial console reaches the CRI log, in the CRI format.
	waitLog(t, f.logPath, readyRE, bootTimeout)
	// Annotations shape what the guest sees.
	cpus := waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest cpus=(\d+)`), 10*time.Second)[1]
	memKB, _ := strconv.Atoi(waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest mem_kb=(\d+)`), 10*time.Second)[1])
	if cpus != "2" {
		t.Errorf("guest sees %s CPUs, want 2 (vmpod.dev/vcpus)", cpus)
	}
	if memKB < 200*1024 || memKB > 300*1024 {
		t.Errorf("guest MemTotal %d kB, want a little under 300Mi (vmpod.dev/memory)", memKB)
	}
	if out := e.mustCrictl("logs", ctrID); !strings.Contains(out, "vmpod-test-guest ready") {
		t.Errorf("crictl logs lacks the ready line:\n%s", tail(out, 20))
	}
	ci := e.inspect(ctrID)
	if ci.Status.State != "CONTAINER_RUNNING" || !strings.HasPrefix(ci.Info.Domain, "vmpod-") {
		t.Fatalf("inspect = %+v", ci)
	}
	if !strings.Contains(virshDomains(t), ci.Info.Domain) {
		t.Fatalf("domain %s not in virsh list", ci.Info.Domain)
	}
	var pi struct {
		Info struct {
			VMs []struct {
				Domain    string
				DomainXML string
			}
		}
	}
	if err := json.Unmarshal([]byte(e.mustCrictl("inspectp", podID)), &pi); err != nil {
		t.Fatal(err)
	}
	if len(pi.Info.VMs) != 1 || !strings.Contains(pi.Info.VMs[0].DomainXML, "<domain type='qemu'") {
		t.Fatalf("inspectp verbose info lacks the domain XML: %+v", pi)
	}

	// One VM per pod.
	f2 := e.podConfigs("life", 1, nil)
	if errOut := e.failCrictl("create", podID, f2.ctr, f2.pod); !strings.Contains(errOut, "FailedPrecondition") || !strings.Contains(errOut, "one VM at a time") {
		t.Fatalf("second create while running: %s", errOut)
	}

	// Attach: a command typed on the serial console runs in the guest.
	a := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	a.send("echo attach-$((6*7))")
	a.expect(regexp.MustCompile(`^attach-42`), 20*time.Second)
	// A second attach and the log both see the output.
	b := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	a.send("echo both-$((2+3))")
	b.expect(regexp.MustCompile(`^both-5`), 20*time.Second)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F both-5`), 10*time.Second)
	b.close()

	// The guest powers itself off: EXITED, exit code 0.
	a.send("poweroff")
	ci = e.waitState(ctrID, "CONTAINER_EXITED", 60*time.Second)
	if ci.Status.ExitCode != 0 || ci.Status.Reason != "Completed" {
		t.Fatalf("after guest poweroff: %+v", ci.Status)
	}
	a.close()

	// The kubelet's restart: attempt 1 while attempt 0 is kept, exited.
	ctr2 := strings.TrimSpace(e.mustCrictl("create", podID, f2.ctr, f2.pod))
	e.mustCrictl("start", ctr2)
	waitLog(t, f2.logPath, readyRE, bootTimeout)
	if ci2 := e.inspect(ctr2); ci2.Info.Disks["root"] == ci.Info.Disks["root"] {
		t.Fatalf("restarted VM reuses the root overlay %s", ci.Info.Disks["root"])
	}
	// StopContainer: ACPI power button, the guest obeys -> exit 0.
	e.mustCrictl("stop", "--timeout", "60", ctr2)
	if ci2 := e.inspect(ctr2); ci2.Status.State != "CONTAINER_EXITED" || ci2.Status.ExitCode != 0 {
		t.Fatalf("after StopContainer: %+v", ci2.Status)
	}
	e.mustCrictl("stop", ctr2) // idempotent
	e.mustCrictl("rm", ctrID)
	e.mustCrictl("rm", ctr2)
	e.mustCrictl("stopp", podID)
	e.mustCrictl("rmp", podID)
	// StopPodSandbox of an unknown ID succeeds. (crictl rmp looks the pod
	// up itself first, so RemovePodSandbox's idempotence is unit-tested.)
	e.mustCrictl("stopp", podID)

	// Nothing left behind.
	if doms := virshDomains(t); strings.Contains(doms, ci.Info.Domain) || strings.Contains(doms, "vmpod-"+ctr2) {
		t.Fatalf("domains left:\n%s", doms)
	}
	for _, dir := range []string{filepath.Join(e.StateDir(), "containers"), filepath.Join(filepath.Dir(e.Socket()), "vms")} {
		if es, _ := os.ReadDir(dir); len(es) != 0 {
			t.Fatalf("%s not empty: %v", dir, es)
		}
	}
	if out := e.mustCrictl("ps", "-a", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("containers left: %s", out)
	}
	if out := e.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods left: %s", out)
	}
}

func TestVMSurvivesDaemonKill(t *testing.T) {
	e := newVMEnv(t)
	f, ctrID := e.bootVM("survivor", nil)

	e.Kill()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("after kill -9 and restart: %+v", ci.Status)
	}
	// The log continues: output after the restart reaches the same file.
	a := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	a.send("echo after-restart-$((40+2))")
	a.expect(regexp.MustCompile(`^after-restart-42`), 20*time.Second)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F after-restart-42`), 10*time.Second)
}

func TestBadAnnotationsRejected(t *testing.T) {
	e := newVMEnv(t)
	for i, tc := range []struct{ key, value string }{
		{"vmpod.dev/vcpus", "0"},
		{"vmpod.dev/vcpus", "65"},
		{"vmpod.dev/vcpus", "two"},
		{"vmpod.dev/memory", "12Mi"},
		{"vmpod.dev/memory", "lots"},
		{"vmpod.dev/root-volume-size", "-1Gi"},
		{"vmpod.dev/disk-bus", "ide"},
		{"vmpod.dev/cpu-model", "bad model!"},
		{"vmpod.dev/firmware", "coreboot"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			f := e.podConfigs(fmt.Sprintf("bad%d", i), 0, map[string]string{tc.key: tc.value})
			errOut := e.failCrictl("runp", f.pod)
			if !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, tc.key) || !strings.Contains(errOut, "accepted values") {
				t.Fatalf("runp with %s=%s: %s", tc.key, tc.value, errOut)
			}
		})
	}
	// A root volume smaller than the image is refused at create time.
	f := e.podConfigs("tiny-root", 0, map[string]string{"vmpod.dev/root-volume-size": "1Mi"})
	podID := strings.TrimSpace(e.mustCrictl("runp", f.pod))
	if errOut := e.failCrictl("create", podID, f.ctr, f.pod); !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, "smaller than the image") {
		t.Fatalf("create with a too small root volume: %s", errOut)
	}
	if out := e.mustCrictl("ps", "-a", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("refused create left a container: %s", out)
	}
	if es, _ := os.ReadDir(filepath.Join(e.StateDir(), "containers")); len(es) != 0 {
		t.Fatalf("refused create left %v", es)
	}
	if out := e.mustCrictl("pods", "-q"); strings.TrimSpace(out) != podID {
		t.Fatalf("pods after refused runp calls: %q", out)
	}
}

func TestVMLogRotationUpdateRebootAndExternalDestroy(t *testing.T) {
	e := newVMEnv(t)
	f, ctrID := e.bootVM("ops", nil)

	// Log rotation: the kubelet renames the file and asks for a reopen.
	rotated := f.logPath + ".1"
	if err := os.Rename(f.logPath, rotated); err != nil {
		t.Fatal(err)
	}
	e.mustCrictl("logs", "-r", ctrID) // crictl logs --reopen: ReopenContainerLog
	a := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	a.send("echo rotated-$((3*3))")
	a.expect(regexp.MustCompile(`^rotated-9`), 20*time.Second)
	waitLog(t, f.logPath, regexp.MustCompile(`stdout F rotated-9`), 10*time.Second)
	if b, _ := os.ReadFile(rotated); !readyRE.Match(b) || strings.Contains(string(b), "rotated-9") {
		t.Fatalf("the rotated file should keep the boot and not get new lines:\n%s", tail(string(b), 5))
	}
	a.close()

	// CPU shares change live.
	e.mustCrictl("update", "--cpu-share", "512", ctrID)
	ci := e.inspect(ctrID)
	dom := ci.Info.Domain
	if out := run(t, "virsh", "-c", "qemu:///system", "schedinfo", dom); !regexp.MustCompile(`cpu_shares\s*:\s*512`).MatchString(out) {
		t.Fatalf("virsh schedinfo after crictl update:\n%s", out)
	}
	// Memory cannot change on a live VM: a clear refusal.
	if errOut := e.failCrictl("update", "--memory", "1073741824", ctrID); !strings.Contains(errOut, "FailedPrecondition") {
		t.Fatalf("memory update: %s", errOut)
	}

	// A guest reboot stays inside the running domain.
	r := e.attach(ctrID)
	time.Sleep(500 * time.Millisecond)
	r.send("reboot")
	waitLog(t, f.logPath, regexp.MustCompile(`(?s)rotated-9.*vmpod-test-guest ready`), bootTimeout)
	r.close()
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" || ci.Info.Domain != dom {
		t.Fatalf("after a guest reboot: %+v", ci)
	}

	// Destroyed from outside vmpod: EXITED, 137, Killed.
	run(t, "virsh", "-c", "qemu:///system", "destroy", dom)
	ci = e.waitState(ctrID, "CONTAINER_EXITED", 30*time.Second)
	if ci.Status.ExitCode != 137 || ci.Status.Reason != "Killed" {
		t.Fatalf("after virsh destroy: %+v", ci.Status)
	}
}

func TestJoinPartialRecords(t *testing.T) {
	in := "T1 stdout F one\nT2 stdout P vmpod-test-guest ip\nT3 stdout P  eth0=10.1.2.3\nT4 stdout F /24\nT5 stdout F \n"
	want := "T1 stdout F one\nT4 stdout F vmpod-test-guest ip eth0=10.1.2.3/24\nT5 stdout F \n"
	if got := joinPartialRecords(in); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if m := guestIPRE.FindStringSubmatch(joinPartialRecords(in)); m == nil || m[1] != "10.1.2.3" {
		t.Fatalf("guestIPRE on joined records: %v", m)
	}
}
