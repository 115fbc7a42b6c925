package cri

import (
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestAttachConsoleFollowsVM: attach streams the console until the VM
// stops, and input reaches the console.
func TestAttachConsoleFollowsVM(t *testing.T) {
	e := newLCEnv(t)
	_, id := e.runningVM(t, "web")
	con := e.Consoles.Last(t)
	outR, outW := io.Pipe()
	inR, inW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.svc.AttachConsole(lcCtx(t), id, inR, outW, nil, true, nil) }()

	// Wait for the subscription (beside vmpod's own reader of guest
	// reports), then feed output.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := con.Subscribers()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("AttachConsole did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go con.Feed("login: ")
	buf := make([]byte, 7)
	if _, err := io.ReadFull(outR, buf); err != nil || string(buf) != "login: " {
		t.Fatalf("attach output %q, %v", buf, err)
	}
	if _, err := inW.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	for con.Written() != "root\n" {
		if time.Now().After(deadline) {
			t.Fatalf("console input = %q", con.Written())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.LV.GuestPowerOff(domainName(id))
	e.status(t, id) // records the exit, closing the console
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("AttachConsole: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AttachConsole did not return after the VM stopped")
	}
	inW.Close()
	err := e.svc.AttachConsole(lcCtx(t), id, nil, nil, nil, false, nil)
	wantCode(t, err, codes.FailedPrecondition)
}
