package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmpod/vmpod/internal/testdaemon"
	"github.com/vmpod/vmpod/pkg/failpoint"
	"github.com/vmpod/vmpod/pkg/store"
)

// crashEnv is a vmEnv whose daemon is built with failpoints, armed through
// a file, with a bystander VM that must run through every crash. On a
// cgroup v1 host the walk's pods and the bystander's have a cgroup_parent,
// as the kubelet gives them, so their VMs run in their pods' cgroups.
type crashEnv struct {
	*vmEnv
	fpFile       string
	tiny         *fileServer // serves tiny.qcow2 for the PullImage walk
	bystander    string      // the bystander's container ID
	bystanderPod string
	qemu         string // its QEMU's pid
	baseline     hostState
	hiers        []string // the host's cgroup v1 hierarchies; nil on v2
	cgTop        string   // the pods' cgroups are <cgTop>/<pod name>
}

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	bin, err := testdaemon.Build(t.TempDir(), "failpoints")
	if err != nil {
		t.Fatal(err)
	}
	// The pods' cgroups before the env: its cleanup (the pods' removal)
	// runs first.
	hiers, top := v1Hierarchies(t), ""
	if hiers != nil {
		top = podCgroups(t, hiers, "bystander", "crash")
	}
	fp := filepath.Join(t.TempDir(), "failpoint")
	e := &crashEnv{fpFile: fp, hiers: hiers, cgTop: top,
		vmEnv: newVMEnvWith(t, daemonOpts{bin: bin, extraEnv: []string{failpoint.EnvFile + "=" + fp}})}
	// A test that fails while a step is paused must not keep the daemon
	// from stopping (cleanups run last-registered first).
	t.Cleanup(func() { os.Remove(fp) })
	e.tiny = newFileServer(t)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", e.tiny.path("tiny.qcow2"), "16M")
	e.writeTranslations("tiny.toml", fmt.Sprintf("[[translations]]\nname = \"tiny\"\nurl = \"%s/tiny.qcow2\"\n", e.tiny.URL))
	e.bystanderPod, e.bystander = e.startVM(e.pod("bystander"))
	e.qemu = qemuPID(t, e.inspect(e.bystander).Info.Domain)
	e.baseline = e.snapshot()
	if top != "" && len(e.baseline["VM cgroup"]) == 0 {
		t.Fatalf("the bystander's VM is not in its pod's cgroup: %v", e.baseline)
	}
	return e
}

// pod is the configuration of the walk's pod (or the bystander's): with
// its cgroup under cgTop where there is one.
func (e *crashEnv) pod(name string) podFiles {
	if e.cgTop == "" {
		return e.podConfigs(name, 0, nil)
	}
	return e.podConfigsWith(name, 0, nil, map[string]any{"linux": map[string]any{"cgroup_parent": e.cgTop + "/" + name}})
}

// vmCgroups lists the VM cgroups (hierarchy:pod/vmpod-<id>) below the
// pods' cgroups.
func (e *crashEnv) vmCgroups() []string {
	var out []string
	for _, h := range e.hiers {
		for _, p := range []string{"bystander", "crash"} {
			ents, _ := os.ReadDir(filepath.Join(cgroupRoot, h, e.cgTop, p))
			for _, ent := range ents {
				if ent.IsDir() {
					out = append(out, h+":"+p+"/"+ent.Name())
				}
			}
		}
	}
	return out
}

// hostState is everything of vmpod's on the host that a crash could leak.
type hostState map[string][]string

// snapshot lists what of this daemon's is on the host: the domains whose
// disks are in its state directory, the netns and taps of the given
// sandboxes, the ports on this run's bridge, its IPAM reservations and
// iptables rules (this run's subnet), its directories and its records.
// Other test runs on the machine have their own.
func (e *crashEnv) snapshot(sandboxes ...string) hostState {
	t := e.t
	t.Helper()
	dir := func(p string) []string {
		es, _ := os.ReadDir(p)
		var n []string
		for _, e := range es {
			n = append(n, e.Name())
		}
		return n
	}
	var netns, taps, rules, domains, ports []string
	links := run(t, "ip", "-o", "link", "show")
	for _, id := range slices.Compact(slices.Sorted(slices.Values(append(sandboxes, e.bystanderPod)))) {
		if _, err := os.Stat("/run/netns/vmpod-" + id); err == nil {
			netns = append(netns, "vmpod-"+id)
		}
		if strings.Contains(links, "vmt"+id[:10]) {
			taps = append(taps, "vmt"+id[:10]+"*")
		}
	}
	subnet := strings.TrimSuffix(e2eSubnet, "0/24")
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, subnet) {
				rules = append(rules, l)
			}
		}
	}
	for _, d := range strings.Fields(virshDomains(t)) {
		if !strings.HasPrefix(d, "vmpod-") {
			continue
		}
		if xml, _ := exec.Command("virsh", "-c", "qemu:///system", "dumpxml", d).Output(); strings.Contains(string(xml), e.StateDir()) {
			domains = append(domains, d)
		}
	}
	for _, l := range strings.Split(run(t, "ip", "-o", "link", "show", "master", e2eBridge), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ports = append(ports, f[1])
		}
	}
	images := filepath.Join(e.StateDir(), "images")
	s := hostState{
		"domain":              domains,
		"netns":               netns,
		"tap":                 taps,
		"port on the bridge":  ports,
		"IPAM reservation":    ipReservations(t),
		"iptables rule":       rules,
		"container directory": dir(filepath.Join(e.StateDir(), "containers")),
		"VM run directory":    dir(filepath.Join(filepath.Dir(e.Socket()), "vms")),
		"image file":          dir(filepath.Join(images, "sha256")),
		"download":            dir(filepath.Join(images, "tmp")),
		"pod record":          strings.Fields(e.mustCrictl("pods", "-q")),
		"container record":    strings.Fields(e.mustCrictl("ps", "-a", "-q")),
		"image record":        strings.Fields(e.mustCrictl("images", "-q")),
		"VM cgroup":           e.vmCgroups(),
	}
	for _, v := range s {
		slices.Sort(v)
	}
	return s
}

// recorded lists the sandbox IDs in the dead daemon's store: the pods a
// crash may have left something of.
func (e *crashEnv) recorded() []string {
	e.t.Helper()
	meta, err := store.Open(filepath.Join(e.StateDir(), "metadata.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer meta.Close()
	var ids []string
	if err := meta.ForEach(store.Sandboxes, func(key string, _ []byte) error {
		ids = append(ids, key)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// leaks lists what s has that the baseline had not, and what of the
// baseline is gone.
func (e *crashEnv) leaks(s hostState) []string {
	var out []string
	for kind, now := range s {
		for _, x := range now {
			if !slices.Contains(e.baseline[kind], x) {
				out = append(out, kind+" "+x+" left")
			}
		}
		for _, x := range e.baseline[kind] {
			if !slices.Contains(now, x) {
				out = append(out, kind+" "+x+" gone")
			}
		}
	}
	slices.Sort(out)
	return out
}

// arm makes the daemon crash (or, with pause, hold) at the failpoint.
func (e *crashEnv) arm(name string, pause bool) {
	e.t.Helper()
	body := name
	if pause {
		body += " pause"
	}
	if err := os.WriteFile(e.fpFile, []byte(body+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// scenario is the sequence of CRI calls, as the kubelet makes them, that
// reaches the failpoints of an operation.
func (e *crashEnv) scenario(point string) [][]string {
	op, _, _ := strings.Cut(point, "/")
	f := e.pod("crash")
	runp := []string{"runp", f.pod}
	create := []string{"create", "{pod}", f.ctr, f.pod}
	start := []string{"start", "{ctr}"}
	switch op {
	case "runp":
		return [][]string{runp}
	case "create":
		return [][]string{runp, create}
	case "start":
		return [][]string{runp, create, start}
	case "stop":
		// A grace period, for the ACPI request; the guest is still
		// booting and ignores it, so the stop destroys it after 2 s.
		return [][]string{runp, create, start, {"stop", "-t", "2", "{ctr}"}}
	case "rm":
		return [][]string{runp, create, start, {"stop", "{ctr}"}, {"rm", "{ctr}"}}
	case "stopp", "teardown":
		return [][]string{runp, create, start, {"stopp", "{pod}"}}
	case "rmp":
		return [][]string{runp, create, start, {"stopp", "{pod}"}, {"rmp", "{pod}"}}
	case "pull":
		return [][]string{{"pull", "tiny"}}
	case "command":
		// The command's steps run after StartContainer returned (the
		// daemon dies on its own, see crashAt), but for the SIGTERM of
		// a stop, which comes once the command runs.
		switch point {
		case "command/exit-seen", "command/exited":
			c := e.commandPod("crash", "sh", "-c", "echo out; exit 3")
			return [][]string{runp, {"create", "{pod}", c.ctr, c.pod}, start}
		case "command/signalled":
			c := e.commandPod("crash", "sleep", "600")
			return [][]string{runp, {"create", "{pod}", c.ctr, c.pod}, start,
				{"exec", "-s", "{ctr}", "sh", "-c", "while [ ! -s /run/vmpod/command.main ]; do sleep 0.2; done"},
				{"stop", "-t", "30", "{ctr}"}}
		}
		c := e.commandPod("crash", "sleep", "600")
		return [][]string{runp, {"create", "{pod}", c.ctr, c.pod}, start}
	}
	e.t.Fatalf("failpoint %s: no scenario reaches operation %q", point, op)
	return nil
}

// asyncCrash says whether point is reached after the scenario's calls
// returned (the runner of a container's command), so the daemon dies on
// its own.
func asyncCrash(point string) bool {
	return strings.HasPrefix(point, "command/") && point != "command/signalled"
}

// crashAt runs point's scenario with point armed and returns once the
// daemon died there, and the container the scenario made (if any); it
// fails the test if the scenario ran through.
func (e *crashEnv) crashAt(point string) (ctr string) {
	t := e.t
	t.Helper()
	e.arm(point, false)
	var pod string
	for _, call := range e.scenario(point) {
		args := slices.Clone(call)
		for i, a := range args {
			args[i] = strings.NewReplacer("{pod}", pod, "{ctr}", ctr).Replace(a)
		}
		out, errOut, err := e.crictl(args...)
		if err != nil {
			select {
			case <-e.Exited():
			case <-time.After(10 * time.Second):
				t.Fatalf("failpoint %s: crictl %s failed but vmpod runs on: %v\n%s", point, strings.Join(args, " "), err, errOut)
			}
			if !strings.Contains(e.LogTail(50), "failpoint "+point+": killing the daemon") {
				t.Fatalf("failpoint %s: vmpod died elsewhere:\n%s", point, e.LogTail(50))
			}
			return ctr
		}
		switch call[0] {
		case "runp":
			pod = strings.TrimSpace(out)
		case "create":
			ctr = strings.TrimSpace(out)
		}
	}
	if asyncCrash(point) {
		select {
		case <-e.Exited():
			if !strings.Contains(e.LogTail(50), "failpoint "+point+": killing the daemon") {
				t.Fatalf("failpoint %s: vmpod died elsewhere:\n%s", point, e.LogTail(50))
			}
			return ctr
		case <-time.After(3 * time.Minute):
		}
	}
	t.Fatalf("failpoint %s: the scenario ran through without reaching it", point)
	return ""
}

// checkCommandAfterCrash checks what a restarted vmpod reports of the
// command a crash at point interrupted: one that was running runs on,
// started once; one whose exit was seen is EXITED with its code (3).
func (e *crashEnv) checkCommandAfterCrash(point, ctr string) {
	t := e.t
	t.Helper()
	if err := e.Start(); err != nil {
		t.Fatalf("after failpoint %s, vmpod does not start: %v", point, err)
	}
	switch point {
	case "command/starting", "command/started":
		if ci := e.inspect(ctr); ci.Status.State != "CONTAINER_RUNNING" {
			t.Fatalf("after a crash at %s the container is %+v", point, ci.Status)
		}
		// The restarted runner starts (or finds) the command: one run.
		// (Processes named sleep, counted from /proc: ps would count the
		// wrapper too, whose argv ends with the command's.)
		out := e.mustCrictl("exec", "-s", ctr, "sh", "-c",
			`while [ ! -s /run/vmpod/command.main ]; do sleep 0.2; done
			n=0; for d in /proc/[0-9]*; do { read -r c <"$d/comm"; } 2>/dev/null && [ "$c" = sleep ] && n=$((n+1)); done; echo $n`)
		if strings.TrimSpace(out) != "1" {
			t.Fatalf("after a crash at %s, %s runs of the command", point, strings.TrimSpace(out))
		}
	case "command/exit-seen", "command/exited":
		if ci := e.waitState(ctr, "CONTAINER_EXITED", 2*time.Minute); ci.Status.ExitCode != 3 || ci.Status.Reason != "Error" {
			t.Fatalf("after a crash at %s the container exited as %+v", point, ci.Status)
		}
	}
}

// cleanUpLikeKubelet restarts vmpod and removes what the kubelet would:
// every pod but the bystander's (stop, then remove) and every image but
// the guest.
func (e *crashEnv) cleanUpLikeKubelet(point string) {
	t := e.t
	t.Helper()
	if !e.Running() {
		if err := e.Start(); err != nil {
			t.Fatalf("after failpoint %s, vmpod does not start: %v", point, err)
		}
	}
	for _, id := range strings.Fields(e.mustCrictl("pods", "-q")) {
		if id == e.bystanderPod {
			continue
		}
		e.mustCrictl("stopp", id)
		e.mustCrictl("rmp", id)
	}
	for _, id := range strings.Fields(e.mustCrictl("images", "-q")) {
		if !slices.Contains(e.baseline["image record"], id) {
			e.mustCrictl("rmi", id)
		}
	}
}

// TestCrashAtEveryStep kills vmpod (SIGKILL, from inside, at a failpoint)
// after each step of RunPodSandbox, CreateContainer, StartContainer, a
// container's command (checking that the restarted vmpod follows the
// command it was running, started once, or reports the exit code it had
// seen), StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox
// and PullImage; restarts it; lets the kubelet's retries run (stop and remove
// the pod, remove the image); and checks that nothing is left (domain,
// netns, tap, veth, IPAM reservation, iptables rule, file, record, VM
// cgroup) and that the bystander VM ran through every crash in the same
// QEMU (in its pod's cgroup on a cgroup v1 host).
func TestCrashAtEveryStep(t *testing.T) {
	e := newCrashEnv(t)
	if len(e.baseline["pod record"]) != 1 || len(e.baseline["domain"]) != 1 || len(e.baseline["port on the bridge"]) != 1 {
		t.Fatalf("baseline: want the bystander alone: %v", e.baseline)
	}
	only := regexp.MustCompile(os.Getenv("VMPOD_E2E_FAILPOINTS")) // a developer's filter; empty matches all
	start := time.Now()
	walked := 0
	for _, point := range failpoint.Points {
		if !only.MatchString(point) {
			continue
		}
		walked++
		t0 := time.Now()
		ctr := e.crashAt(point)
		pods := e.recorded()
		if asyncCrash(point) {
			e.checkCommandAfterCrash(point, ctr)
		}
		e.cleanUpLikeKubelet(point)
		if left := e.leaks(e.snapshot(pods...)); len(left) > 0 {
			t.Fatalf("after a crash at %s and the kubelet's cleanup:\n  %s\n%s", point, strings.Join(left, "\n  "), e.LogTail(40))
		}
		ci := e.inspect(e.bystander)
		if ci.Status.State != "CONTAINER_RUNNING" {
			t.Fatalf("after a crash at %s the bystander is %s", point, ci.Status.State)
		}
		if pid := qemuPID(t, ci.Info.Domain); pid != e.qemu {
			t.Fatalf("after a crash at %s the bystander runs in QEMU %s, was %s", point, pid, e.qemu)
		}
		if e.cgTop != "" {
			if out := outside(t, e.qemu, e.cgTop+"/bystander/vmpod-"+e.bystander, e.hiers); len(out) > 0 {
				t.Fatalf("after a crash at %s the bystander's QEMU threads are outside its cgroup: %v", point, out)
			}
		}
		t.Logf("%-26s crash, restart, cleanup: %.1fs", point, time.Since(t0).Seconds())
	}
	t.Logf("walked %d of %d failpoints in %.0fs", walked, len(failpoint.Points), time.Since(start).Seconds())
}

// TestRemoveDuringCreate holds a CreateContainer after its seed is written
// and removes the pod meanwhile: the removal waits for the create, then
// removes what it made; no record, domain or file outlives the pod.
func TestRemoveDuringCreate(t *testing.T) {
	e := newCrashEnv(t)
	f := e.podConfigs("racing", 0, nil)
	pod := strings.TrimSpace(e.mustCrictl("runp", f.pod))
	e.arm("create/seed-written", true)
	created := make(chan error, 1)
	go func() {
		_, errOut, err := e.crictl("create", pod, f.ctr, f.pod)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, errOut)
		}
		created <- err
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(e.LogTail(20), "failpoint create/seed-written: paused"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the create did not reach its seed:\n%s", e.LogTail(30))
		}
	}
	removed := make(chan error, 1)
	go func() {
		_, errOut, err := e.crictl("rmp", "-f", pod)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, errOut)
		}
		removed <- err
	}()
	select {
	case err := <-removed:
		t.Fatalf("the pod's removal did not wait for the create in progress: %v", err)
	case <-time.After(2 * time.Second):
	}
	os.Remove(e.fpFile)
	if err := <-created; err != nil {
		t.Logf("create: %v", err) // either outcome is fine; what it made must go
	}
	if err := <-removed; err != nil {
		t.Fatalf("rmp: %v", err)
	}
	if left := e.leaks(e.snapshot(pod)); len(left) > 0 {
		t.Fatalf("after removing a pod during its container's create:\n  %s", strings.Join(left, "\n  "))
	}
}

// TestRecoveryQuarantines: a container record that cannot be decoded
// does not keep vmpod down. The restarted daemon reports the container
// as unknown, the bystander runs on, and removing its pod removes its VM.
func TestRecoveryQuarantines(t *testing.T) {
	e := newCrashEnv(t)
	f := e.podConfigs("garbled", 0, nil)
	pod, ctr := e.startVM(f)
	domain := e.inspect(ctr).Info.Domain
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	meta, err := store.Open(filepath.Join(e.StateDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Valid JSON that no container record decodes from.
	err = meta.Put(store.Containers, ctr, []string{"not", "a", "record"})
	meta.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatalf("vmpod does not start with an undecodable record: %v", err)
	}
	ci := e.inspect(ctr)
	if ci.Status.State != "CONTAINER_UNKNOWN" {
		t.Fatalf("the garbled container is %s, want CONTAINER_UNKNOWN", ci.Status.State)
	}
	if !strings.Contains(e.Log(), "container quarantined") {
		t.Fatalf("the daemon's log does not say it quarantined the record:\n%s", e.LogTail(30))
	}
	if b := e.inspect(e.bystander); b.Status.State != "CONTAINER_RUNNING" || qemuPID(t, b.Info.Domain) != e.qemu {
		t.Fatalf("the bystander did not run through the recovery: %s", b.Status.State)
	}
	// The kubelet's cleanup of the pod removes it: its domain names its
	// pod.
	e.mustCrictl("stopp", pod)
	e.mustCrictl("rmp", pod)
	if strings.Contains(virshDomains(t), domain) {
		t.Fatalf("domain %s outlived its quarantined container's pod", domain)
	}
	if left := e.leaks(e.snapshot(pod)); len(left) > 0 {
		t.Fatalf("after removing the quarantined container and its pod:\n  %s", strings.Join(left, "\n  "))
	}
}
