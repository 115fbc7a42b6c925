package e2e

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestExecSyncThroughGuestAgent(t *testing.T) {
	e := newVMEnv(t)
	f := e.podConfigs("exec", 0, nil)
	_, ctrID := e.startVM(f)
	waitLog(t, f.logPath, readyRE, bootTimeout)
	waitLog(t, f.logPath, regexp.MustCompile(`vmpod-test-guest qemu-ga started`), 10*time.Second)

	if out := e.mustCrictl("exec", "-s", ctrID, "cat", "/etc/hostname"); strings.TrimSpace(out) != "exec" {
		t.Fatalf("cat /etc/hostname = %q, want the pod's hostname", out)
	}
	// stdout and stderr stay apart (crictl prints both on its stdout, so
	// ask over the CRI directly).
	conn, err := grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{
		ContainerId: ctrID, Cmd: []string{"sh", "-c", "echo to-out; echo to-err >&2; exit 4"},
	})
	if err != nil || string(resp.Stdout) != "to-out\n" || string(resp.Stderr) != "to-err\n" || resp.ExitCode != 4 {
		t.Fatalf("ExecSync = %+v, %v", resp, err)
	}
	// The exit code propagates through crictl.
	// (crictl itself exits 1 and names the command's code.)
	_, exitErrOut, err := e.crictl("exec", "-s", ctrID, "sh", "-c", "exit 3")
	if err == nil || !strings.Contains(exitErrOut, "exited with 3") {
		t.Fatalf("exit 3: %v\n%s", err, exitErrOut)
	}
	// A timeout returns in about the timeout.
	start := time.Now()
	_, errOut, err := e.crictl("exec", "-s", "--timeout", "2", ctrID, "sleep", "30")
	took := time.Since(start)
	if err == nil || took > 15*time.Second {
		t.Fatalf("sleep 30 with a 2 s timeout: err %v after %v", err, took)
	}
	if !strings.Contains(errOut, "DeadlineExceeded") && !strings.Contains(errOut, "timeout") {
		t.Fatalf("timeout error: %s", errOut)
	}
	// The VM keeps running.
	if ci := e.inspect(ctrID); ci.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("after exec: %+v", ci.Status)
	}

	// Stats of the running VM: CPU and memory are not zero.
	var stats struct {
		Stats []struct {
			Attributes struct{ ID string }
			CPU        struct {
				UsageCoreNanoSeconds struct{ Value string }
			}
			Memory struct {
				WorkingSetBytes struct{ Value string }
			}
		}
	}
	if err := json.Unmarshal([]byte(e.mustCrictl("stats", "-o", "json")), &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Stats) != 1 || stats.Stats[0].CPU.UsageCoreNanoSeconds.Value == "" || stats.Stats[0].CPU.UsageCoreNanoSeconds.Value == "0" ||
		stats.Stats[0].Memory.WorkingSetBytes.Value == "" || stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
		t.Fatalf("crictl stats: %+v", stats)
	}
	if out := e.mustCrictl("statsp"); !strings.Contains(out, "exec") {
		t.Fatalf("crictl statsp:\n%s", out)
	}
}
