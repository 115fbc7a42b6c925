package fake_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/libvirttools/fake"
)

const (
	uuidA = "6f1c8a7e-2d3b-5c4a-9e8f-00000000000a"
	uuidB = "6f1c8a7e-2d3b-5c4a-9e8f-00000000000b"
)

func domainXML(t *testing.T, typ, name, uuid string) string {
	t.Helper()
	dom := libvirtxml.Domain{Type: typ, Name: name, UUID: uuid, Memory: &libvirtxml.DomainMemory{Value: 65536, Unit: "KiB"}}
	doc, err := dom.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func define(t *testing.T, c *fake.Connection, name, uuid string) {
	t.Helper()
	if err := c.Define(context.Background(), domainXML(t, "qemu", name, uuid)); err != nil {
		t.Fatalf("Define %s: %v", name, err)
	}
}

func wantState(t *testing.T, c *fake.Connection, name string, state libvirttools.DomainState, reason libvirttools.ShutoffReason) {
	t.Helper()
	st, err := c.Status(context.Background(), name)
	if err != nil {
		t.Fatalf("Status %s: %v", name, err)
	}
	if st.State != state || st.Reason != reason {
		t.Fatalf("Status %s = %s/%s, want %s/%s", name, st.State, st.Reason, state, reason)
	}
}

func wantErr(t *testing.T, what string, err, class error) {
	t.Helper()
	if class == nil {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	if !errors.Is(err, class) {
		t.Fatalf("%s: err = %v, want %v", what, err, class)
	}
}

func TestDefine(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		xml   string
		class error
	}{
		{"new", domainXML(t, "qemu", "vmpod-a", uuidA), nil},
		{"redefine same name and uuid", domainXML(t, "kvm", "vmpod-a", uuidA), nil},
		{"uuid without dashes upper case", domainXML(t, "qemu", "vmpod-a", strings.ToUpper(strings.ReplaceAll(uuidA, "-", ""))), nil},
		{"name taken by another uuid", domainXML(t, "qemu", "vmpod-a", uuidB), errdefs.ErrAlreadyExists},
		{"uuid taken by another name", domainXML(t, "qemu", "vmpod-b", uuidA), errdefs.ErrAlreadyExists},
		{"missing name", domainXML(t, "qemu", "", uuidB), errdefs.ErrInvalidArgument},
		{"missing uuid", domainXML(t, "qemu", "vmpod-b", ""), errdefs.ErrInvalidArgument},
		{"malformed uuid", domainXML(t, "qemu", "vmpod-b", "not-a-uuid"), errdefs.ErrInvalidArgument},
		{"missing type", domainXML(t, "", "vmpod-b", uuidB), errdefs.ErrInvalidArgument},
		{"not XML", "<domain type='qemu'><name>x", errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case runs against a connection holding vmpod-a/uuidA.
			c := fake.New()
			define(t, c, "vmpod-a", uuidA)
			wantErr(t, "Define", c.Define(ctx, tc.xml), tc.class)
			doms, err := c.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(doms) != 1 || doms[0].Name != "vmpod-a" || doms[0].UUID != uuidA {
				t.Errorf("List = %+v, want only vmpod-a %s", doms, uuidA)
			}
			if tc.class == nil {
				if xml, _, _ := c.Domain("vmpod-a"); xml != tc.xml {
					t.Errorf("definition = %s, want %s", xml, tc.xml)
				}
			}
		})
	}
}

func TestStateMachine(t *testing.T) {
	ctx := context.Background()
	const name = "vmpod-a"
	type step struct {
		call   string
		class  error
		state  libvirttools.DomainState
		reason libvirttools.ShutoffReason
	}
	S := libvirttools.DomainShutoff
	for _, tc := range []struct {
		name  string
		acpi  bool // SetIgnoreACPI
		steps []step
	}{
		{"start paused resume shutdown", false, []step{
			{"Start paused", nil, libvirttools.DomainPaused, 0},
			{"Start", errdefs.ErrFailedPrecondition, libvirttools.DomainPaused, 0},
			{"Shutdown", errdefs.ErrFailedPrecondition, libvirttools.DomainPaused, 0},
			{"Undefine", errdefs.ErrFailedPrecondition, libvirttools.DomainPaused, 0},
			{"Resume", nil, libvirttools.DomainRunning, 0},
			{"Resume", errdefs.ErrFailedPrecondition, libvirttools.DomainRunning, 0},
			{"Start paused", errdefs.ErrFailedPrecondition, libvirttools.DomainRunning, 0},
			{"Undefine", errdefs.ErrFailedPrecondition, libvirttools.DomainRunning, 0},
			{"Shutdown", nil, S, libvirttools.ShutoffShutdown},
			{"Shutdown", errdefs.ErrFailedPrecondition, S, libvirttools.ShutoffShutdown},
			{"Resume", errdefs.ErrFailedPrecondition, S, libvirttools.ShutoffShutdown},
			{"Destroy", nil, S, libvirttools.ShutoffShutdown},
			{"Start", nil, libvirttools.DomainRunning, 0},
		}},
		{"guest ignores ACPI", true, []step{
			{"Start", nil, libvirttools.DomainRunning, 0},
			{"Shutdown", nil, libvirttools.DomainRunning, 0},
			{"Destroy", nil, S, libvirttools.ShutoffDestroyed},
			{"Destroy", nil, S, libvirttools.ShutoffDestroyed},
		}},
		{"destroy paused", false, []step{
			{"Start paused", nil, libvirttools.DomainPaused, 0},
			{"Destroy", nil, S, libvirttools.ShutoffDestroyed},
			{"Undefine", nil, 0, 0},
			{"Undefine", nil, 0, 0},
			{"Start", errdefs.ErrNotFound, 0, 0},
		}},
		{"guest powers off", false, []step{
			{"Start", nil, libvirttools.DomainRunning, 0},
			{"GuestPowerOff", nil, S, libvirttools.ShutoffShutdown},
		}},
		{"crash", false, []step{
			{"Start paused", nil, libvirttools.DomainPaused, 0},
			{"Crash", nil, S, libvirttools.ShutoffCrashed},
			{"Start", nil, libvirttools.DomainRunning, 0},
			{"Crash", nil, S, libvirttools.ShutoffCrashed},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.New()
			c.SetIgnoreACPI(name, tc.acpi)
			define(t, c, name, uuidA)
			wantState(t, c, name, S, libvirttools.ShutoffUnknown)
			for i, s := range tc.steps {
				var err error
				switch s.call {
				case "Start":
					err = c.Start(ctx, name, false)
				case "Start paused":
					err = c.Start(ctx, name, true)
				case "Resume":
					err = c.Resume(ctx, name)
				case "Shutdown":
					err = c.Shutdown(ctx, name)
				case "Destroy":
					err = c.Destroy(ctx, name)
				case "Undefine":
					err = c.Undefine(ctx, name)
				case "GuestPowerOff":
					c.GuestPowerOff(name)
				case "Crash":
					c.Crash(name)
				default:
					t.Fatalf("unknown step %q", s.call)
				}
				what := fmt.Sprintf("step %d %s", i, s.call)
				wantErr(t, what, err, s.class)
				if _, st, ok := c.Domain(name); !ok {
					if s.state != 0 {
						t.Fatalf("%s: domain gone, want %s/%s", what, s.state, s.reason)
					}
				} else if st.State != s.state || st.Reason != s.reason {
					t.Fatalf("%s: state %s/%s, want %s/%s", what, st.State, st.Reason, s.state, s.reason)
				}
			}
		})
	}
}

func TestMissingDomain(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	wantErr(t, "Start", c.Start(ctx, "nope", false), errdefs.ErrNotFound)
	wantErr(t, "Resume", c.Resume(ctx, "nope"), errdefs.ErrNotFound)
	wantErr(t, "Shutdown", c.Shutdown(ctx, "nope"), errdefs.ErrNotFound)
	wantErr(t, "Destroy", c.Destroy(ctx, "nope"), errdefs.ErrNotFound)
	wantErr(t, "Undefine", c.Undefine(ctx, "nope"), nil)
	_, err := c.Status(ctx, "nope")
	wantErr(t, "Status", err, errdefs.ErrNotFound)
	_, err = c.XML(ctx, "nope")
	wantErr(t, "XML", err, errdefs.ErrNotFound)
	wantErr(t, "SetCPUTune", c.SetCPUTune(ctx, "nope", 1024, 0, 0), errdefs.ErrNotFound)
	_, err = c.WaitShutoff(ctx, "nope", time.Second)
	wantErr(t, "WaitShutoff", err, errdefs.ErrNotFound)
	if _, _, ok := c.Domain("nope"); ok {
		t.Error("Domain(nope) ok")
	}
}

func TestListAndCalls(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	define(t, c, "vmpod-b", uuidB)
	define(t, c, "vmpod-a", uuidA)
	define(t, c, "other", "6f1c8a7e-2d3b-5c4a-9e8f-00000000000c")
	if err := c.Start(ctx, "vmpod-b", true); err != nil {
		t.Fatal(err)
	}
	got, err := c.List(ctx, "vmpod-")
	if err != nil {
		t.Fatal(err)
	}
	want := []libvirttools.DomainStatus{
		{Name: "vmpod-a", UUID: uuidA, State: libvirttools.DomainShutoff},
		{Name: "vmpod-b", UUID: uuidB, State: libvirttools.DomainPaused},
	}
	if !slices.Equal(got, want) {
		t.Errorf("List = %+v, want %+v", got, want)
	}
	if got, _ := c.List(ctx, "none-"); len(got) != 0 {
		t.Errorf("List(none-) = %+v", got)
	}
	wantCalls := []string{
		"Define vmpod-b", "Define vmpod-a", "Define other",
		"Start vmpod-b paused", "List vmpod-", "List none-",
	}
	if calls := c.Calls(); !slices.Equal(calls, wantCalls) {
		t.Errorf("Calls = %q, want %q", calls, wantCalls)
	}
}

func TestXMLAndCPUTune(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	v1 := domainXML(t, "qemu", "vmpod-a", uuidA)
	define(t, c, "vmpod-a", uuidA)
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatal(err)
	}
	// Redefining a running domain changes only its next boot.
	v2 := domainXML(t, "kvm", "vmpod-a", uuidA)
	if err := c.Define(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.XML(ctx, "vmpod-a"); got != v1 {
		t.Errorf("live XML = %s, want %s", got, v1)
	}
	if err := c.SetCPUTune(ctx, "vmpod-a", 2048, 100000, 50000); err != nil {
		t.Fatal(err)
	}
	for _, which := range []string{"live", "config"} {
		var doc string
		if which == "live" {
			doc, _ = c.XML(ctx, "vmpod-a")
		} else {
			doc, _, _ = c.Domain("vmpod-a")
		}
		var dom libvirtxml.Domain
		if err := dom.Unmarshal(doc); err != nil {
			t.Fatal(err)
		}
		tune := dom.CPUTune
		if tune == nil || tune.Shares == nil || tune.Shares.Value != 2048 || tune.GlobalPeriod == nil ||
			tune.GlobalPeriod.Value != 100000 || tune.GlobalQuota == nil || tune.GlobalQuota.Value != 50000 {
			t.Errorf("%s cputune = %+v", which, tune)
		}
	}
	// Zero leaves a value alone.
	if err := c.SetCPUTune(ctx, "vmpod-a", 0, 0, -1); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx, "vmpod-a"); err != nil {
		t.Fatal(err)
	}
	doc, err := c.XML(ctx, "vmpod-a")
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		t.Fatal(err)
	}
	if dom.Type != "kvm" || dom.CPUTune.Shares.Value != 2048 || dom.CPUTune.GlobalQuota.Value != -1 {
		t.Errorf("inactive XML after destroy = %s", doc)
	}
}

func TestWaitShutoff(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	c.SetIgnoreACPI("vmpod-a", true)
	define(t, c, "vmpod-a", uuidA)

	off, err := c.WaitShutoff(ctx, "vmpod-a", time.Hour)
	if err != nil || !off {
		t.Fatalf("WaitShutoff of a shut-off domain = %v, %v", off, err)
	}
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(ctx, "vmpod-a"); err != nil {
		t.Fatal(err)
	}
	off, err = c.WaitShutoff(ctx, "vmpod-a", 20*time.Millisecond)
	if err != nil || off {
		t.Fatalf("WaitShutoff when the guest ignores ACPI = %v, %v; want timeout", off, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	off, err = c.WaitShutoff(cctx, "vmpod-a", time.Hour)
	if !errors.Is(err, context.Canceled) || off {
		t.Fatalf("WaitShutoff with a cancelled context = %v, %v", off, err)
	}

	done := make(chan error, 1)
	go func() {
		off, err := c.WaitShutoff(ctx, "vmpod-a", time.Hour)
		if err == nil && !off {
			err = errors.New("not off")
		}
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.GuestPowerOff("vmpod-a")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitShutoff did not return after GuestPowerOff")
	}
	wantState(t, c, "vmpod-a", libvirttools.DomainShutoff, libvirttools.ShutoffShutdown)
}

// TestWaitShutoffOutage: WaitShutoff waits through libvirtd being down,
// and reports Unavailable if it is still down at the timeout.
func TestWaitShutoffOutage(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	define(t, c, "vmpod-a", uuidA)
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatal(err)
	}
	c.SetDown(true)
	off, err := c.WaitShutoff(ctx, "vmpod-a", 20*time.Millisecond)
	if off || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("WaitShutoff timing out while down = %v, %v; want Unavailable", off, err)
	}

	done := make(chan error, 1)
	go func() {
		off, err := c.WaitShutoff(ctx, "vmpod-a", time.Hour)
		if err == nil && !off {
			err = errors.New("not off")
		}
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.GuestPowerOff("vmpod-a") // unseen while down
	time.Sleep(10 * time.Millisecond)
	c.SetDown(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitShutoff did not return after the outage")
	}

	c.FailNext("WaitShutoff", errdefs.ErrUnavailable)
	if _, err := c.WaitShutoff(ctx, "vmpod-a", time.Hour); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("WaitShutoff with an injected failure = %v", err)
	}
}

func TestFailuresAndDown(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	define(t, c, "vmpod-a", uuidA)

	injected := fmt.Errorf("injected: %w", errdefs.ErrFailedPrecondition)
	c.FailNext("Start", injected)
	c.FailNext("Start", errdefs.ErrUnavailable)
	if err := c.Start(ctx, "vmpod-a", false); err != injected {
		t.Fatalf("first Start = %v, want the injected error", err)
	}
	if err := c.Start(ctx, "vmpod-a", false); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("second Start = %v, want the second injected error", err)
	}
	wantState(t, c, "vmpod-a", libvirttools.DomainShutoff, libvirttools.ShutoffUnknown)
	if err := c.Start(ctx, "vmpod-a", false); err != nil {
		t.Fatalf("third Start = %v", err)
	}

	c.SetDown(true)
	wantErr(t, "Destroy while down", c.Destroy(ctx, "vmpod-a"), errdefs.ErrUnavailable)
	_, err := c.List(ctx, "")
	wantErr(t, "List while down", err, errdefs.ErrUnavailable)
	_, err = c.Ping(ctx)
	wantErr(t, "Ping while down", err, errdefs.ErrUnavailable)
	c.SetDown(false)
	wantState(t, c, "vmpod-a", libvirttools.DomainRunning, 0)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	wantErr(t, "Destroy with a cancelled context", c.Destroy(cctx, "vmpod-a"), context.Canceled)

	defer func() {
		if recover() == nil {
			t.Error("FailNext of an unknown method did not panic")
		}
	}()
	c.FailNext("Frobnicate", injected)
}

// TestConcurrent is for -race: many goroutines drive their own domains
// and list everything.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	c := fake.New()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			name := fmt.Sprintf("vmpod-%02d", i)
			steps := []func() error{
				func() error {
					return c.Define(ctx, domainXML(t, "qemu", name, fmt.Sprintf("6f1c8a7e-2d3b-5c4a-9e8f-0000000000%02d", i)))
				},
				func() error { return c.Start(ctx, name, true) },
				func() error { return c.Resume(ctx, name) },
				func() error { _, err := c.List(ctx, "vmpod-"); return err },
				func() error { return c.Shutdown(ctx, name) },
				func() error {
					off, err := c.WaitShutoff(ctx, name, time.Second)
					if err == nil && !off {
						err = errors.New("not off")
					}
					return err
				},
				func() error { return c.Undefine(ctx, name) },
			}
			for j, step := range steps {
				if err := step(); err != nil {
					t.Errorf("%s step %d: %v", name, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if doms, _ := c.List(ctx, ""); len(doms) != 0 {
		t.Errorf("left over: %+v", doms)
	}
}

func TestQEMUPID(t *testing.T) {
	c := fake.New()
	ctx := context.Background()
	define(t, c, "a", uuidA)
	define(t, c, "b", uuidB)
	if _, err := c.QEMUPID(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a shut-off domain has a pid: %v", err)
	}
	c.Start(ctx, "a", true)
	c.Start(ctx, "b", false)
	c.SetQEMUPID("b", 4242)
	pa, errA := c.QEMUPID(ctx, "a")
	pb, errB := c.QEMUPID(ctx, "b")
	if errA != nil || errB != nil || pa != 100001 || pb != 4242 {
		t.Errorf("pids %d %v, %d %v", pa, errA, pb, errB)
	}
}
