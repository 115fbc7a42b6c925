package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestOpenLayouts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		root     func(t *testing.T) string
		mode     string
		hiers    []string
		memoryIn string
	}{
		{"v1", func(t *testing.T) string { return v1Root(t, false) }, "v1",
			[]string{"cpu,cpuacct", "cpuset", "freezer", "memory", "pids", "systemd"}, "memory"},
		{"hybrid", func(t *testing.T) string { return v1Root(t, true) }, "hybrid",
			[]string{"cpu,cpuacct", "cpuset", "freezer", "memory", "pids", "systemd", "unified"}, "memory"},
		{"v2", v2Root, "v2", []string{""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Open(Options{Root: tc.root(t), Driver: DriverCgroupfs})
			if err != nil {
				t.Fatal(err)
			}
			if h.Mode() != tc.mode {
				t.Errorf("mode %q, want %q", h.Mode(), tc.mode)
			}
			// devices is never joined: libvirt's device cgroup keeps
			// confining QEMU.
			if !slices.Equal(h.hierarchies, tc.hiers) {
				t.Errorf("hierarchies %q, want %q", h.hierarchies, tc.hiers)
			}
			if h.dirOf["memory"] != tc.memoryIn || (tc.mode != "v2" && h.dirOf["cpuacct"] != "cpu,cpuacct") {
				t.Errorf("controllers %v", h.dirOf)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	root := t.TempDir()
	write(t, root, "cpu/cgroup.procs", "")
	if _, err := Open(Options{Root: root, Driver: DriverCgroupfs}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "memory") {
		t.Errorf("a root without a memory hierarchy: %v", err)
	}
	if _, err := Open(Options{Root: filepath.Join(root, "missing"), Driver: DriverCgroupfs}); err == nil {
		t.Error("a missing root opened")
	}
	if _, err := Open(Options{Root: v2Root(t), Driver: "openrc"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("an unknown driver: %v", err)
	}
}

func TestResolveParentCgroupfs(t *testing.T) {
	h, err := Open(Options{Root: v2Root(t), Driver: DriverCgroupfs})
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{"/kubepods/burstable/pod1b2c", "/vmpod-k8s-e2e/kubepods/pod3a4d-55", "/kubepods/besteffort/pod_x:y@z+a=b"} {
		if got, err := h.ResolveParent(ok); err != nil || got != ok {
			t.Errorf("ResolveParent(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "kubepods/pod1", "/", "/kubepods/../etc", "/kubepods//pod", "/kubepods/", "/kubepods/.hidden",
		"/kubepods/pod 1", "/kubepods/pod\n1", "kubepods-burstable-pod1.slice", "/" + strings.Repeat("a", 256), "/a/" + strings.Repeat("b/", 2100)} {
		if _, err := h.ResolveParent(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ResolveParent(%q): %v, want InvalidArgument", bad, err)
		}
	}
	_, err = h.ResolveParent("kubepods-burstable-pod1.slice")
	if !strings.Contains(err.Error(), "cgroupDriver") {
		t.Errorf("a slice name under cgroupfs should point at the driver setting: %v", err)
	}
}

func TestExpandSlice(t *testing.T) {
	for in, want := range map[string]string{
		"-.slice":        "/",
		"kubepods.slice": "/kubepods.slice",
		"kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice",
		"kubepods-pod12.slice":     "/kubepods.slice/kubepods-pod12.slice",
		"a-b-c.slice":              "/a.slice/a-b.slice/a-b-c.slice",
		"machine-qemu\\x2d1.slice": "/machine.slice/machine-qemu\\x2d1.slice",
	} {
		if got, err := ExpandSlice(in); err != nil || got != want {
			t.Errorf("ExpandSlice(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".slice", "kubepods", "/kubepods/burstable", "kubepods--x.slice", "-kubepods.slice",
		"kubepods-.slice", "a/b.slice", "kube pods.slice", "kubepods.scope", strings.Repeat("a", 300) + ".slice"} {
		if _, err := ExpandSlice(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ExpandSlice(%q): %v, want InvalidArgument", bad, err)
		}
	}
}

func TestPlanSystemdNames(t *testing.T) {
	h, err := Open(Options{Root: v1Root(t, true), Driver: DriverSystemd})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Plan("kubepods-besteffort-podab_cd.slice", "0123abcd")
	if err != nil {
		t.Fatal(err)
	}
	if p.Parent != "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab_cd.slice" ||
		p.Path != p.Parent+"/vmpod-0123abcd" || !slices.Contains(p.Hierarchies, "unified") || slices.Contains(p.Hierarchies, "devices") {
		t.Errorf("plan %+v", p)
	}
	if _, err := h.Plan("/kubepods/besteffort/podab", "0123abcd"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "slice") {
		t.Errorf("a cgroupfs path under systemd: %v", err)
	}
	if _, err := h.Plan("kubepods.slice", "../x"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a container ID with a slash: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, "memory", p.Parent)); !os.IsNotExist(err) {
		t.Errorf("Plan made something: %v", err)
	}
}

func TestCPUWeight(t *testing.T) {
	// The kubelet's conversion (pkg/kubelet/cm: 1 + ((shares-2)*9999)/262142).
	for shares, want := range map[uint64]uint64{0: 0, 1: 1, 2: 1, 3: 1, 102: 4, 1024: 39, 2048: 79, 262144: 10000, 1 << 20: 10000} {
		if got := CPUWeight(shares); got != want {
			t.Errorf("CPUWeight(%d) = %d, want %d", shares, got, want)
		}
	}
}
