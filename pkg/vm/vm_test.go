package vm

import (
	"strings"
	"testing"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/volumes"
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

func TestDomainSeedAndBalloon(t *testing.T) {
	shape := podspec.Shape{DomainType: libvirttools.DomainTypeQEMU, VCPUs: 1, MemoryBytes: 256 << 20}
	layout := Layout{Dir: "/var/lib/vmpod/containers/c1", RunDir: "/run/vmpod/vms/c1"}
	vol := volumes.Plan{Disks: []libvirttools.Disk{{Path: "/dev/vg0/data", Block: true, Format: libvirttools.DiskFormatRaw, Serial: "data"}}}
	for _, tc := range []struct {
		name       string
		bus        string
		cgroup     string
		seedTarget string // the seed disk's <target> attributes
		scsi       bool   // a virtio-scsi controller
		balloon    string
	}{
		{"virtio root: seed is the last virtio disk", "", "", `dev="vdc" bus="virtio"`, false, `<memballoon model="virtio">`},
		{"scsi root: seed is a CD-ROM", libvirttools.DiskBusSCSI, "", `dev="sdb" bus="scsi"`, true, `<memballoon model="virtio">`},
		{"in a cgroup: no balloon", "", "/kubepods/pod1", `dev="vdc" bus="virtio"`, false, `<memballoon model="none">`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shape
			s.DiskBus, s.CgroupParent = tc.bus, tc.cgroup
			xml, err := Domain(Spec{Name: "vmpod-c1", UUID: "6f1c8a7e-2d3b-5c4a-9e8f-0123456789ab", Shape: s, Layout: layout, Volumes: vol, Metadata: libvirttools.Metadata{SandboxID: "s1"}})
			if err != nil {
				t.Fatal(err)
			}
			seed := `<source file="` + layout.SeedISO() + `"></source>` + "\n      <target " + tc.seedTarget + `></target>`
			if !strings.Contains(xml, seed) {
				t.Errorf("no %s in\n%s", seed, xml)
			}
			if got := strings.Contains(xml, `model="virtio-scsi"`); got != tc.scsi {
				t.Errorf("virtio-scsi controller: %v, want %v", got, tc.scsi)
			}
			if !strings.Contains(xml, tc.balloon) {
				t.Errorf("no %s in\n%s", tc.balloon, xml)
			}
		})
	}
}
