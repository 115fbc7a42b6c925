package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/guest/guesttest"
)

func TestRunCaptured(t *testing.T) {
	g := guesttest.New()
	a := NewAgent(agentFunc(g.Answer), "vm")
	for _, tt := range []struct {
		argv          []string
		input         []byte
		cap           int
		out, err      string
		code          int
		outTruncation bool
	}{
		{argv: []string{"hostname"}, out: "vm-host\n"},
		{argv: []string{"exit3"}, code: 3},
		{argv: []string{"both"}, out: "to-stdout\n", err: "to-stderr\n"},
		{argv: []string{"cat"}, input: []byte("fed in"), out: "fed in"},
		{argv: []string{"nosuch"}, code: 127, err: "not found\n"},
		{argv: []string{"bigoutput"}, cap: 1 << 20, outTruncation: true},
	} {
		res, err := a.RunCaptured(t.Context(), tt.argv, tt.input, ProbePoll, tt.cap)
		if err != nil {
			t.Fatalf("%q: %v", tt.argv, err)
		}
		if tt.outTruncation {
			if len(res.Stdout) != tt.cap+len(TruncationNote) || !bytes.HasSuffix(res.Stdout, []byte(TruncationNote)) {
				t.Errorf("%q: %d bytes of stdout, want %d then the truncation note", tt.argv, len(res.Stdout), tt.cap)
			}
			continue
		}
		if string(res.Stdout) != tt.out || string(res.Stderr) != tt.err || res.Code != tt.code {
			t.Errorf("%q = %q, %q, %d; want %q, %q, %d", tt.argv, res.Stdout, res.Stderr, res.Code, tt.out, tt.err, tt.code)
		}
	}

	// A command outliving its deadline is killed.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := a.RunCaptured(ctx, []string{"sleep", "3600"}, nil, ProbePoll, 0)
	if !errors.Is(err, ErrKilled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep past its deadline: %v", err)
	}
	if pid := g.LastPID() - 1; !g.Killed(pid) {
		t.Fatalf("sleep (pid %d) was not killed: last argv %q", pid, g.LastArgv())
	}
}

func TestAgentMissing(t *testing.T) {
	a := NewAgent(agentFunc(func(string, string) (string, error) {
		return "", errdefs.ErrFailedPrecondition
	}), "vm")
	_, err := a.RunCaptured(t.Context(), []string{"true"}, nil, ProbePoll, 0)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "qemu-guest-agent") {
		t.Fatalf("no agent: %v", err)
	}
}

func TestReadStdin(t *testing.T) {
	b, err := ReadStdin(strings.NewReader(""))
	if err != nil || b == nil || len(b) != 0 {
		t.Fatalf("empty stdin: %q, %v (want empty, not nil)", b, err)
	}
	if _, err := ReadStdin(bytes.NewReader(make([]byte, StdinCap+1))); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("stdin over the cap: %v", err)
	}
	if b, err := ReadStdin(bytes.NewReader(make([]byte, StdinCap))); err != nil || len(b) != StdinCap {
		t.Fatalf("stdin at the cap: %d bytes, %v", len(b), err)
	}
}

// TestHostileAgentReplies: whatever the guest's agent answers is bounded
// and validated; none of it panics or is taken as a success.
func TestHostileAgentReplies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply string
		class error // nil: any error
	}{
		{"huge", `{"return":{"pid":1,"pad":"` + strings.Repeat("x", MaxReplyBytes) + `"}}`, errdefs.ErrResourceExhausted},
		{"not JSON", "\x00\xffgarbage", nil},
		{"pid zero", `{"return":{"pid":0}}`, nil},
		{"pid negative", `{"return":{"pid":-5}}`, nil},
		{"pid a string", `{"return":{"pid":"1; rm -rf /"}}`, nil},
		{"no return", `{"error":{"class":"GenericError","desc":"no"}}`, nil},
	} {
		a := NewAgent(agentFunc(func(string, string) (string, error) { return tc.reply, nil }), "vm")
		_, err := a.Exec(t.Context(), []string{"true"}, nil)
		if err == nil || (tc.class != nil && !errors.Is(err, tc.class)) {
			t.Errorf("%s: Exec = %v", tc.name, err)
		}
		if len(fmt.Sprint(err)) > 1000 {
			t.Errorf("%s: the error repeats the reply (%d bytes)", tc.name, len(fmt.Sprint(err)))
		}
	}
	// A status with bad base64 output, or a silly exit code, is an error or
	// a plain number, never a crash.
	a := NewAgent(agentFunc(func(_, cmd string) (string, error) {
		if strings.Contains(cmd, `"guest-exec"`) {
			return `{"return":{"pid":7}}`, nil
		}
		return `{"return":{"exited":true,"exitcode":-2147483648,"out-data":"!!not base64!!"}}`, nil
	}), "vm")
	if _, err := a.RunCaptured(t.Context(), []string{"x"}, nil, ProbePoll, 0); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("bad base64: %v", err)
	}
}
