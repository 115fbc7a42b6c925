package vm

import (
	"strings"
	"testing"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/podspec"
)

// TestWorkingSetNotBelowHost: the guest's balloon report cannot make the
// VM look smaller than QEMU's resident memory on the host.
func TestWorkingSetNotBelowHost(t *testing.T) {
	for _, tc := range []struct {
		name             string
		mem, usable, rss uint64
		wantWS           uint64
	}{
		{"guest reports more in use than resident", 1024, 224, 600, 800},
		{"guest claims almost all free", 1024, 1000, 600, 600},
		{"no balloon stats", 1024, 0, 500, 500},
	} {
		u := UsageOf(libvirttools.DomainStats{MemoryBytes: tc.mem, MemoryUsableBytes: tc.usable, MemoryRSSBytes: tc.rss, CPUTimeNs: 7})
		if u.WorkingSetBytes != tc.wantWS || u.UsageBytes != tc.wantWS || u.RSSBytes != tc.rss || u.CPUTimeNs != 7 {
			t.Errorf("%s: %+v, want working set %d", tc.name, u, tc.wantWS)
		}
	}
}

func TestDomainBalloon(t *testing.T) {
	shape := podspec.Shape{DomainType: libvirttools.DomainTypeQEMU, VCPUs: 1, MemoryBytes: 256 << 20}
	layout := Layout{Dir: "/var/lib/vmpod/containers/c1", RunDir: "/run/vmpod/vms/c1"}
	for _, tc := range []struct {
		name    string
		cgroup  string
		balloon string
	}{
		{"no cgroup_parent: the balloon's stats", "", `<memballoon model="virtio">`},
		{"in a cgroup: no balloon", "/kubepods/pod1", `<memballoon model="none">`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shape
			s.CgroupParent = tc.cgroup
			xml, err := Domain(Spec{Name: "vmpod-c1", UUID: "6f1c8a7e-2d3b-5c4a-9e8f-0123456789ab", Shape: s, Layout: layout, Metadata: libvirttools.Metadata{SandboxID: "s1"}})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(xml, tc.balloon) {
				t.Errorf("no %s in\n%s", tc.balloon, xml)
			}
		})
	}
}
