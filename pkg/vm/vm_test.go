package vm

import (
	"testing"

	"github.com/vmpod/vmpod/pkg/libvirttools"
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
