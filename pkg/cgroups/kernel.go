package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	occgroups "github.com/opencontainers/cgroups"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// kernel moves tasks between cgroups and says where they are: procKernel
// on a real host (tests put a fake in its place).
type kernel interface {
	// moveProcess moves every thread of pid into cgroup dir.
	moveProcess(dir string, pid int) error
	// moveThread moves one thread into cgroup dir (v1).
	moveThread(dir string, tid int) error
	// removeCgroup removes a cgroup and the cgroups below it; a missing
	// one is fine, one with tasks fails.
	removeCgroup(dir string) error
	// cpuTime is the CPU time (user and system, in ns) process pid has
	// used so far, all its threads'; a process that is gone is
	// errdefs.ErrNotFound.
	cpuTime(pid int) (uint64, error)
	// threads says where each thread of pid is: its cgroup path by
	// hierarchy directory, by thread ID. A process that is gone is
	// errdefs.ErrNotFound.
	threads(pid int) (map[int]map[string]string, error)
}

// procKernel is the kernel's cgroup interface: cgroup.procs and tasks
// files, /proc/<pid>/task/<tid>/cgroup.
type procKernel struct{ h *Host }

func (k procKernel) moveProcess(dir string, pid int) error {
	return occgroups.WriteCgroupProc(dir, pid)
}

func (k procKernel) removeCgroup(dir string) error { return occgroups.RemovePath(dir) }

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture vmpod runs on (procfs assumes it too).
const userHZ = 100

// cpuTime reads /proc/<pid>/stat with github.com/prometheus/procfs: the
// process's utime + stime, its live threads' and its ended threads'.
func (k procKernel) cpuTime(pid int) (uint64, error) {
	fs, err := procfs.NewFS(k.h.proc)
	if err != nil {
		return 0, err
	}
	p, err := fs.Proc(pid)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("QEMU (pid %d) is gone: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("read QEMU's CPU time: %w", err)
	}
	return uint64(st.UTime+st.STime) * (1e9 / userHZ), nil
}

func (k procKernel) moveThread(dir string, tid int) error {
	err := occgroups.WriteFile(dir, "tasks", strconv.Itoa(tid))
	if errors.Is(err, unix.ESRCH) {
		return nil // the thread ended
	}
	return err
}

func (k procKernel) threads(pid int) (map[int]map[string]string, error) {
	h := k.h
	taskDir := filepath.Join(h.proc, strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(taskDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("QEMU (pid %d) is gone: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("list QEMU's threads: %w", err)
	}
	out := map[int]map[string]string{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		m, err := h.parseCgroupFile(filepath.Join(taskDir, e.Name(), "cgroup"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return nil, err
		}
		out[tid] = m
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("QEMU (pid %d) has no threads left: %w", pid, errdefs.ErrNotFound)
	}
	return out, nil
}

// parseCgroupFile reads a /proc/<pid>/cgroup file: each line is
// "ID:controllers:path", mapped here to the hierarchy's directory.
func (h *Host) parseCgroupFile(name string) (map[string]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		first, _, _ := strings.Cut(parts[1], ",")
		if hier, ok := h.dirOf[first]; ok {
			m[hier] = parts[2]
		}
	}
	return m, sc.Err()
}
