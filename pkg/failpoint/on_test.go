//go:build failpoints

package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as a daemon that hits one failpoint
// (FAILPOINT_TEST_HIT) and says whether it got past it.
func TestMain(m *testing.M) {
	if name := os.Getenv("FAILPOINT_TEST_HIT"); name != "" {
		Hit(name)
		os.Stdout.WriteString("past " + name + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hit runs the test binary as a child that hits name with the failpoint
// file armed with arm ("" for no file).
func hit(t *testing.T, name, arm string) (*exec.Cmd, *strings.Builder, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fp")
	if arm != "" {
		if err := os.WriteFile(file, []byte(arm), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FAILPOINT_TEST_HIT="+name, EnvFile+"="+file)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out, file
}

func TestArmedFailpointKills(t *testing.T) {
	cmd, out, file := hit(t, "create/seed-written", "create/seed-written\n")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, want SIGKILL; output:\n%s", err, out)
	}
	if strings.Contains(out.String(), "past") {
		t.Fatalf("the child went past the failpoint:\n%s", out)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failpoint file is still there (a restarted daemon would crash again): %v", err)
	}
}

func TestOtherFailpointPasses(t *testing.T) {
	cmd, out, file := hit(t, "create/dir-created", "create/seed-written")
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "past create/dir-created") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("another failpoint's file was removed: %v", err)
	}
	cmd, out, _ = hit(t, "create/dir-created", "")
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "past") {
		t.Fatalf("child without a failpoint file: %v\n%s", err, out)
	}
}

func TestPausedFailpointHoldsUntilReleased(t *testing.T) {
	cmd, out, file := hit(t, "stop/requested", "stop/requested pause")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("the child went on while paused: %v\n%s", err, out)
	case <-time.After(500 * time.Millisecond):
	}
	os.Remove(file)
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), "past stop/requested") {
			t.Fatalf("child: %v\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the child stayed paused after its file was removed")
	}
}

func TestUnlistedFailpointPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Hit of an unlisted name did not panic")
		}
	}()
	Hit("no/such-point")
}
