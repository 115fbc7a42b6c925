package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bootTimeout is generous: TCG on a loaded 2-core machine.
const bootTimeout = 90 * time.Second

// vmEnv is a daemon with the test guest pulled as image "guest".
type vmEnv struct {
	*daemon
	logDir string
}

func newVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	return newVMEnvWith(t, daemonOpts{})
}

// newVMEnvWith is newVMEnv with daemon options.
func newVMEnvWith(t *testing.T, o daemonOpts) *vmEnv {
	t.Helper()
	guest := guestImage(t)
	srv := newFileServer(t)
	run(t, "cp", guest, srv.path("guest.qcow2"))
	d := startDaemon(t, o)
	d.writeTranslations("guest.toml", fmt.Sprintf("[[translations]]\nname = \"guest\"\nurl = \"%s/guest.qcow2\"\n", srv.URL))
	d.mustCrictl("pull", "guest")
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	t.Cleanup(func() { e.cleanupAll() })
	return e
}

// cleanupAll removes every pod so no domain outlives the test.
func (e *vmEnv) cleanupAll() {
	if !e.Running() {
		return
	}
	// Containers first: one whose pod is unknown (a quarantined record)
	// goes too.
	out, _, _ := e.crictl("ps", "-a", "-q")
	for _, id := range strings.Fields(out) {
		e.crictl("rm", "-f", id)
	}
	out, _, _ = e.crictl("pods", "-q")
	for _, id := range strings.Fields(out) {
		e.crictl("stopp", id)
		e.crictl("rmp", id)
	}
}

func (e *vmEnv) writeJSON(name string, v any) string {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

type podFiles struct {
	pod, ctr string
	logPath  string
}

// podConfigs writes a sandbox and a container config for a VM pod.
func (e *vmEnv) podConfigs(name string, attempt int, annotations map[string]string) podFiles {
	return e.podConfigsWith(name, attempt, annotations, nil)
}

// podConfigsWith is podConfigs with extra PodSandboxConfig fields.
func (e *vmEnv) podConfigsWith(name string, attempt int, annotations map[string]string, podExtra map[string]any) podFiles {
	logDir := filepath.Join(e.logDir, name)
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "e2e", "uid": "uid-" + name, "attempt": 0},
		"log_directory": logDir,
		"annotations":   annotations,
		"labels":        map[string]string{"app": name},
	}
	for k, v := range podExtra {
		pod[k] = v
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "vm", "attempt": attempt},
		"image":    map[string]any{"image": "guest"},
		"log_path": fmt.Sprintf("vm/%d.log", attempt),
		"stdin":    true, "tty": true,
	}
	return podFiles{
		pod:     e.writeJSON(name+"-pod.json", pod),
		ctr:     e.writeJSON(fmt.Sprintf("%s-ctr-%d.json", name, attempt), ctr),
		logPath: filepath.Join(logDir, fmt.Sprintf("vm/%d.log", attempt)),
	}
}

// editCtr changes the container config of f.
func (e *vmEnv) editCtr(f podFiles, edit func(ctr map[string]any)) {
	e.t.Helper()
	var ctr map[string]any
	b, err := os.ReadFile(f.ctr)
	if err == nil {
		err = json.Unmarshal(b, &ctr)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	edit(ctr)
	if b, err = json.Marshal(ctr); err == nil {
		err = os.WriteFile(f.ctr, b, 0o644)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

// addMount adds a host directory mount to the container config of f.
func (e *vmEnv) addMount(f podFiles, containerPath, hostPath string) {
	e.editCtr(f, func(ctr map[string]any) {
		mounts, _ := ctr["mounts"].([]any)
		ctr["mounts"] = append(mounts, map[string]any{"container_path": containerPath, "host_path": hostPath})
	})
}

// readFile returns a file's content.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startVM runs a pod and boots its VM; it returns the pod and container IDs.
func (e *vmEnv) startVM(f podFiles) (podID, ctrID string) {
	e.t.Helper()
	podID = strings.TrimSpace(e.mustCrictl("runp", f.pod))
	ctrID = strings.TrimSpace(e.mustCrictl("create", podID, f.ctr, f.pod))
	e.mustCrictl("start", ctrID)
	return podID, ctrID
}

// bootVM runs pod name with its VM and waits for the guest's ready line;
// it returns the pod's files and the container ID.
func (e *vmEnv) bootVM(name string, annotations map[string]string) (podFiles, string) {
	e.t.Helper()
	f := e.podConfigs(name, 0, annotations)
	_, ctrID := e.startVM(f)
	waitLog(e.t, f.logPath, readyRE, bootTimeout)
	return f, ctrID
}

// waitLog waits until the CRI log file has a line matching re and returns
// the submatches. A line the console wrote in pieces (partial "P" records,
// as happens when the guest is slow) is matched whole, as "TS stdout F
// <line>".
func waitLog(t *testing.T, path string, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if m := re.FindStringSubmatch(joinPartialRecords(string(b))); m != nil {
				return m
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s: no line matching %q within %v; log:\n%s", path, re, timeout, tail(string(b), 40))
	return nil
}

// joinPartialRecords rewrites a CRI log so that every line the container
// printed is one "TS STREAM F content" record: runs of "P" records are
// joined with the record that ends them.
func joinPartialRecords(log string) string {
	var out strings.Builder
	pending := map[string]string{} // stream -> content of its P records so far
	for _, rec := range strings.Split(log, "\n") {
		f := strings.SplitN(rec, " ", 4)
		if len(f) < 3 {
			continue
		}
		content := ""
		if len(f) == 4 {
			content = f[3]
		}
		if f[2] == "P" {
			pending[f[1]] += content
			continue
		}
		fmt.Fprintf(&out, "%s %s F %s\n", f[0], f[1], pending[f[1]]+content)
		delete(pending, f[1])
	}
	return out.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// attach runs `crictl attach -i` with a pipe to its stdin; it returns a
// function that sends a line and one that waits for output matching re.
type attachSession struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	output strings.Builder
}

func (e *vmEnv) attach(ctrID string) *attachSession {
	e.t.Helper()
	cmd := exec.Command("crictl", "--config", e.crictlConfig, "attach", "-i", ctrID)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	a := &attachSession{t: e.t, cmd: cmd, stdin: stdin, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			a.lines <- sc.Text()
		}
		close(a.lines)
	}()
	e.t.Cleanup(a.close)
	return a
}

func (a *attachSession) send(line string) {
	a.t.Helper()
	if _, err := io.WriteString(a.stdin, line+"\n"); err != nil {
		a.t.Fatalf("attach stdin: %v", err)
	}
}

func (a *attachSession) expect(re *regexp.Regexp, timeout time.Duration) string {
	a.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-a.lines:
			if !ok {
				a.t.Fatalf("attach ended before %q; output:\n%s", re, a.output.String())
			}
			a.output.WriteString(l + "\n")
			if re.MatchString(l) {
				return l
			}
		case <-deadline:
			a.t.Fatalf("attach: no %q within %v; output:\n%s", re, timeout, a.output.String())
		}
	}
}

func (a *attachSession) close() {
	if a.cmd.ProcessState == nil {
		a.cmd.Process.Kill()
		a.cmd.Wait()
	}
}

type ctrInspect struct {
	Status struct {
		State    string
		ExitCode int
		Reason   string
		Message  string
		LogPath  string
	}
	Info struct {
		Domain string
		Disks  map[string]string
		// Cgroup is where the VM was placed (pkg/cgroups' Placement).
		Cgroup *struct {
			Path             string
			Libvirt          []string
			StartCPUNs       uint64 `json:"start_cpu_ns"`
			StartMemoryBytes uint64 `json:"start_memory_bytes"`
		}
	}
}

func (e *vmEnv) inspect(ctrID string) ctrInspect {
	e.t.Helper()
	var ci ctrInspect
	if err := json.Unmarshal([]byte(e.mustCrictl("inspect", ctrID)), &ci); err != nil {
		e.t.Fatal(err)
	}
	return ci
}

// waitState polls the container until it reaches state.
func (e *vmEnv) waitState(ctrID, state string, timeout time.Duration) ctrInspect {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var ci ctrInspect
	for time.Now().Before(deadline) {
		ci = e.inspect(ctrID)
		if ci.Status.State == state {
			return ci
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.t.Fatalf("container %s is %s after %v, want %s", ctrID, ci.Status.State, timeout, state)
	return ci
}

func virshDomains(t *testing.T) string {
	t.Helper()
	return run(t, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
}
