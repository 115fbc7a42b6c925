package lifecycle_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmpod/vmpod/pkg/lifecycle/lifecycletest"
)

// TestGuestReports: the guest's line about a share it could not mount is
// reported in the container's verbose status; a guest printing such lines
// in a loop gets a bounded number kept; over-long lines are not inspected.
func TestGuestReports(t *testing.T) {
	e := lifecycletest.NewEnv(t)
	ctx := lifecycletest.Ctx(t)
	sbID, err := e.Pods.RunSandbox(ctx, pod("web"), "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.Pods.CreateContainer(ctx, sbID, ctr("vm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pods.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	con := e.Consoles.Last(t)
	for con.Subscribers() < 1 {
		time.Sleep(time.Millisecond)
	}
	con.Feed("booting\r\n" + strings.Repeat("x", 5000) + "vmpod: share vmpod-fs9 (virtiofs) is not mounted at /hidden\n")
	con.Feed("[  3.2] vmpod: share vmpod-fs0 (virtiofs) is not mounted at /mnt/data\r\n")
	for i := range 20 {
		con.Feed(fmt.Sprintf("vmpod: share flood%d (9p) is not mounted at /x\n", i))
	}
	var reports []any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		info, err := e.Pods.ContainerInfo(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := info["guestReports"].([]string); ok && len(r) == 8 {
			for _, s := range r {
				reports = append(reports, s)
			}
			break
		}
	}
	if len(reports) != 8 || reports[0] != "vmpod: share vmpod-fs0 (virtiofs) is not mounted at /mnt/data" {
		t.Fatalf("reports %q", reports)
	}
	for _, r := range reports {
		if strings.Contains(r.(string), "/hidden") {
			t.Fatalf("a report hidden in an over-long line was taken: %q", r)
		}
	}
}
