package cri

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeGuest is a QEMU guest agent that "runs" argv by a table: each
// command finishes after its duration with the given outputs.
type fakeGuest struct {
	mu    sync.Mutex
	procs map[int]*fakeProc
	next  int
	argvs [][]string
}

type fakeProc struct {
	argv  []string
	start time.Time
}

type fakeResult struct {
	out, err string
	code     int
	after    time.Duration
}

var fakeCommands = map[string]fakeResult{
	"hostname":  {out: "vm-host\n"},
	"exit3":     {code: 3},
	"both":      {out: "to-stdout\n", err: "to-stderr\n"},
	"sleep":     {after: time.Hour},
	"bigoutput": {out: strings.Repeat("x", execOutputCap+10)},
}

func (g *fakeGuest) answer(domain, command string) (string, error) {
	var req struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(command), &req); err != nil {
		return "", err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch req.Execute {
	case "guest-exec":
		var a guestExecArgs
		json.Unmarshal(req.Arguments, &a)
		g.next++
		g.procs[g.next] = &fakeProc{argv: append([]string{a.Path}, a.Arg...), start: time.Now()}
		g.argvs = append(g.argvs, append([]string{a.Path}, a.Arg...))
		return fmt.Sprintf(`{"return":{"pid":%d}}`, g.next), nil
	case "guest-exec-status":
		var a struct{ PID int }
		json.Unmarshal(req.Arguments, &a)
		p := g.procs[a.PID]
		r, ok := fakeCommands[p.argv[0]]
		if !ok {
			r = fakeResult{code: 127, err: "not found\n"}
		}
		if time.Since(p.start) < r.after {
			return `{"return":{"exited":false}}`, nil
		}
		enc := base64.StdEncoding.EncodeToString
		return fmt.Sprintf(`{"return":{"exited":true,"exitcode":%d,"out-data":%q,"err-data":%q}}`, r.code, enc([]byte(r.out)), enc([]byte(r.err))), nil
	}
	return "", fmt.Errorf("unknown command %s", req.Execute)
}

func TestExecSync(t *testing.T) {
	e := newLCEnv(t)
	g := &fakeGuest{procs: map[int]*fakeProc{}}
	e.lv.SetAgent(g.answer)
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	e.mustStart(t, id)
	exec := func(timeout int64, argv ...string) (*runtimeapi.ExecSyncResponse, error) {
		return e.svc.ExecSync(lcCtx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: argv, Timeout: timeout})
	}

	r, err := exec(0, "hostname")
	if err != nil || string(r.Stdout) != "vm-host\n" || r.ExitCode != 0 {
		t.Fatalf("hostname: %+v, %v", r, err)
	}
	r, err = exec(0, "exit3")
	if err != nil || r.ExitCode != 3 {
		t.Fatalf("exit 3: %+v, %v", r, err)
	}
	r, err = exec(0, "both", "a b", "c")
	if err != nil || string(r.Stdout) != "to-stdout\n" || string(r.Stderr) != "to-stderr\n" {
		t.Fatalf("stdout/stderr: %+v, %v", r, err)
	}
	if got := g.argvs[len(g.argvs)-1]; strings.Join(got, "|") != "both|a b|c" {
		t.Fatalf("argv reached the agent as %q (must be argv, not a shell string)", got)
	}
	r, err = exec(0, "bigoutput")
	if err != nil || len(r.Stdout) != execOutputCap+len(truncationNote) || !strings.HasSuffix(string(r.Stdout), truncationNote) {
		t.Fatalf("output cap: %d bytes, %v", len(r.Stdout), err)
	}

	start := time.Now()
	_, err = exec(1, "sleep", "30")
	wantCode(t, err, codes.DeadlineExceeded, "timed out")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timed-out exec returned after %v", d)
	}
	if last := g.argvs[len(g.argvs)-1]; last[0] != "kill" || last[1] != "-9" {
		t.Fatalf("the timed-out guest process was not killed: last command %q", last)
	}

	_, err = exec(0)
	wantCode(t, err, codes.InvalidArgument)
}

func TestExecSyncWithoutAgent(t *testing.T) {
	e := newLCEnv(t)
	pod := lcPod("web")
	id := e.mustCreate(t, e.runPod(t, pod), pod, lcContainer("vm"))
	e.mustStart(t, id)
	_, err := e.svc.ExecSync(lcCtx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}})
	wantCode(t, err, codes.FailedPrecondition, "qemu-guest-agent")
	// The VM keeps running.
	if st := e.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("state after a failed exec: %v", st.State)
	}
}
