package cgroups

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostCgroups opens the machine's cgroups (cgroupfs driver) with a fresh
// pod cgroup name, or skips: these tests need root and a writable cgroup
// file system. The pod's cgroups are removed at the end.
func hostCgroups(t *testing.T) (*Host, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	h, err := Open(Options{Driver: DriverCgroupfs})
	if err != nil {
		t.Skipf("no usable cgroups: %v", err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	top := "/vmpod-cgroups-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		for _, hier := range append(h.hierarchies, "devices") {
			os.Remove(h.dir(hier, top+"/pod"))
			os.Remove(h.dir(hier, top))
		}
	})
	return h, top + "/pod"
}

// startProcess starts a command in its own process group and kills it at
// the test's end.
func startProcess(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// threaded is a process with four threads that each use a little CPU
// and allocate a MiB every half second.
const threaded = `
import threading, time
keep = []
def work():
    while True:
        if len(keep) < 40:
            keep.append(bytearray(1 << 20))
        end = time.time() + 0.02
        while time.time() < end:
            pass
        time.sleep(0.5)
for _ in range(3):
    threading.Thread(target=work, daemon=True).start()
work()
`

func TestHostPlacement(t *testing.T) {
	h, parent := hostCgroups(t)
	// The pod's cgroup in every hierarchy, as the kubelet makes it.
	for _, hier := range h.hierarchies {
		if err := os.MkdirAll(h.dir(hier, parent), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := startProcess(t, "python3", "-c", threaded)
	pid := cmd.Process.Pid
	// Wait for its threads (python3 takes seconds to start on a loaded
	// machine).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ents, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task")); len(ents) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("python3 did not start its 4 threads within 20 s")
		}
	}
	p, err := h.Plan(parent, "realtest")
	if err != nil {
		t.Fatal(err)
	}
	p.Limits = Limits{MemoryBytes: 200<<20 + 123, CPUShares: 512, CPUQuotaUS: 50000, CPUPeriodUS: 100000}
	// Stopped while it moves, as QEMU is paused then: the CPU time it had
	// used is all it used outside the cgroup.
	cmd.Process.Signal(syscall.SIGSTOP)
	start := time.Now()
	p, err = h.Apply(p, pid)
	cmd.Process.Signal(syscall.SIGCONT)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("placed %d threads in %d hierarchies (%s host) in %v; its CPU so far %d ns", 4, len(p.Hierarchies), h.Mode(), time.Since(start), p.StartCPUNs)
	if p.StartCPUNs == 0 {
		t.Errorf("no start-up CPU read")
	}
	if len(p.Hierarchies) != len(h.hierarchies) {
		t.Errorf("joined %q, want every hierarchy but devices (%q)", p.Hierarchies, h.hierarchies)
	}
	threads, err := procKernel{h}.threads(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(threads) < 4 {
		t.Fatalf("%d threads", len(threads))
	}
	for tid, m := range threads {
		for _, hier := range p.Hierarchies {
			if m[hier] != p.Path {
				t.Errorf("thread %d in %s: %q, want %q", tid, hier, m[hier], p.Path)
			}
		}
	}
	if ok, err := h.limitsHold(p); !ok || err != nil {
		t.Errorf("limits do not read back: %v", err)
	}
	if n, err := h.Verify(p, pid); n != 0 || err != nil {
		t.Errorf("Verify: moved %d, %v", n, err)
	}
	time.Sleep(1200 * time.Millisecond)
	u, err := h.Stats(p)
	if err != nil {
		t.Fatal(err)
	}
	// The cgroup counts the CPU time since the move: the process's own
	// less what it had used before.
	total, err := procKernel{h}.cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	since := int64(total) - int64(p.StartCPUNs)
	t.Logf("CPU: the process's %d ns, %d ns before the move; the cgroup's %d ns", total, p.StartCPUNs, u.CPUNs)
	// /proc counts in 10 ms ticks, read twice; the cgroup in ns.
	if d := since - int64(u.CPUNs); d > 20e6+since/10 || -d > 20e6+since/10 {
		t.Errorf("the cgroup's CPU time %d ns is not the process's since the move (%d ns)", u.CPUNs, since)
	}
	pu, err := h.PodStats(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VM cgroup: %+v", u)
	if u.CPUNs == 0 || u.MemoryBytes == 0 || pu.CPUNs < u.CPUNs || pu.MemoryBytes < u.MemoryBytes {
		t.Errorf("usage: VM %+v, pod %+v", u, pu)
	}
	// An update: more memory, no quota.
	if p, err = h.SetLimits(p, Limits{MemoryBytes: 300 << 20, CPUShares: 2}); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.limitsHold(p); !ok || err != nil {
		t.Errorf("updated limits do not read back: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := h.Remove(p); err != nil {
		t.Fatal(err)
	}
	for _, hier := range p.Hierarchies {
		if _, err := os.Stat(h.dir(hier, p.Path)); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", h.dir(hier, p.Path), err)
		}
	}
}

// A process above the memory limit is OOM-killed in the VM's cgroup, and
// counted there.
func TestHostOOMKilled(t *testing.T) {
	h, parent := hostCgroups(t)
	cmd := exec.Command("python3", "-c", "import sys,time; sys.stdin.readline(); b = bytearray(256 << 20); time.sleep(60)")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p, err := h.Plan(parent, "oomtest")
	if err != nil {
		t.Fatal(err)
	}
	p.Limits = Limits{MemoryBytes: 64 << 20}
	if p, err = h.Apply(p, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	err = cmd.Wait()
	if !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the process was not killed: %v", err)
	}
	if n := h.OOMKills(p); n != 1 {
		t.Errorf("OOM kills %d, want 1", n)
	}
	if err := h.Remove(p); err != nil {
		t.Fatal(err)
	}
}
