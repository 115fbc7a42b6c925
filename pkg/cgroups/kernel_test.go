package cgroups

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

// QEMU's CPU time comes from /proc/<pid>/stat: utime + stime (fields 14
// and 15, in USER_HZ ticks) after the command, which may hold spaces
// and parentheses.
func TestProcCPUTime(t *testing.T) {
	proc := t.TempDir()
	h := &Host{proc: proc}
	// A process's line, its command renamed to something hostile.
	write(t, proc, "4242/stat", "4242 (qemu) (evil 1 2 3) S 1 4241 4241 0 -1 4194560 58702 0 0 0 712 31 0 0 20 0 10 0 3811 2190041088 61500 "+
		"18446744073709551615 94313803628544 94313803648425 140734358805296 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94313803664432 "+
		"94313803666048 94314080796672 140734358813183 140734358813203 140734358813203 140734358814699 0\n")
	got, err := procKernel{h}.cpuTime(4242)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(712+31) * 1e7; got != want {
		t.Errorf("CPU time %d ns, want %d", got, want)
	}
	if _, err := (procKernel{h}).cpuTime(4243); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a process that is gone: %v, want NotFound", err)
	}
	write(t, proc, "4244/stat", "4244 (qemu S 1\n")
	if _, err := (procKernel{h}).cpuTime(4244); err == nil {
		t.Error("a garbled stat file was read")
	}
}
