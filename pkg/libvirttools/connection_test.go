package libvirttools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// The tests against a real libvirtd run only with VMPOD_LIBVIRT_TEST=1;
// VMPOD_LIBVIRT_URI overrides the default qemu:///system. The domains are
// TCG (type qemu), so they need no KVM.
func libvirtURI(t *testing.T) string {
	t.Helper()
	if os.Getenv("VMPOD_LIBVIRT_TEST") != "1" {
		t.Skip("set VMPOD_LIBVIRT_TEST=1 to run against a real libvirtd")
	}
	if uri := os.Getenv("VMPOD_LIBVIRT_URI"); uri != "" {
		return uri
	}
	return "qemu:///system"
}

func TestTranslateError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		class error // nil: no class
	}{
		{"no domain", libvirt.Error{Code: libvirt.ERR_NO_DOMAIN, Domain: libvirt.FROM_QEMU,
			Message: "Domain not found: no domain with matching name 'x'"}, errdefs.ErrNotFound},
		{"operation invalid", libvirt.Error{Code: libvirt.ERR_OPERATION_INVALID, Domain: libvirt.FROM_QEMU,
			Message: "Requested operation is not valid: domain is already running"}, errdefs.ErrFailedPrecondition},
		{"dom exist", libvirt.Error{Code: libvirt.ERR_DOM_EXIST, Domain: libvirt.FROM_DOMAIN,
			Message: "operation failed: domain 'x' already exists"}, errdefs.ErrAlreadyExists},
		{"define: name held by another uuid", libvirt.Error{Code: libvirt.ERR_OPERATION_FAILED, Domain: libvirt.FROM_DOMAIN,
			Message: "operation failed: domain 'x' already exists with uuid 6f1c8a7e-2d3b-5c4a-9e8f-0123456789ab"}, errdefs.ErrAlreadyExists},
		{"define: uuid held by another name", libvirt.Error{Code: libvirt.ERR_OPERATION_FAILED, Domain: libvirt.FROM_DOMAIN,
			Message: "operation failed: domain 'x' is already defined with uuid 6f1c8a7e-2d3b-5c4a-9e8f-0123456789ab"}, errdefs.ErrAlreadyExists},
		{"other operation failed", libvirt.Error{Code: libvirt.ERR_OPERATION_FAILED, Domain: libvirt.FROM_QEMU,
			Message: "operation failed: guest CPU doesn't match specification"}, nil},
		{"no connect", libvirt.Error{Code: libvirt.ERR_NO_CONNECT, Domain: libvirt.FROM_REMOTE,
			Message: "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"}, errdefs.ErrUnavailable},
		{"invalid conn", libvirt.Error{Code: libvirt.ERR_INVALID_CONN, Domain: libvirt.FROM_NONE,
			Message: "invalid connection pointer in virConnectGetType"}, errdefs.ErrUnavailable},
		{"socket EOF", libvirt.Error{Code: libvirt.ERR_SYSTEM_ERROR, Domain: libvirt.FROM_RPC,
			Message: "End of file while reading data: Input/output error"}, errdefs.ErrUnavailable},
		{"socket broken pipe", libvirt.Error{Code: libvirt.ERR_SYSTEM_ERROR, Domain: libvirt.FROM_RPC,
			Message: "Cannot write data: Broken pipe"}, errdefs.ErrUnavailable},
		{"reply too large", libvirt.Error{Code: libvirt.ERR_RPC, Domain: libvirt.FROM_RPC,
			Message: "Unable to encode message payload"}, errdefs.ErrResourceExhausted},
		{"client socket closed", libvirt.Error{Code: libvirt.ERR_INTERNAL_ERROR, Domain: libvirt.FROM_RPC,
			Message: "internal error: client socket is closed"}, errdefs.ErrUnavailable},
		{"system error in the driver", libvirt.Error{Code: libvirt.ERR_SYSTEM_ERROR, Domain: libvirt.FROM_QEMU,
			Message: "Cannot access storage file '/x.qcow2': No such file or directory"}, nil},
		{"internal error in the driver", libvirt.Error{Code: libvirt.ERR_INTERNAL_ERROR, Domain: libvirt.FROM_QEMU,
			Message: "internal error: qemu unexpectedly closed the monitor"}, nil},
		{"config unsupported", libvirt.Error{Code: libvirt.ERR_CONFIG_UNSUPPORTED, Domain: libvirt.FROM_QEMU,
			Message: "unsupported configuration: Emulator '/nope' does not support virt type 'kvm'"}, errdefs.ErrInvalidArgument},
		{"xml error", libvirt.Error{Code: libvirt.ERR_XML_ERROR, Domain: libvirt.FROM_DOMAIN,
			Message: "XML error: missing domain type attribute"}, errdefs.ErrInvalidArgument},
		{"xml detail", libvirt.Error{Code: libvirt.ERR_XML_DETAIL, Domain: libvirt.FROM_XML,
			Message: "(domain_definition):1: Premature end of data"}, errdefs.ErrInvalidArgument},
		{"schema", libvirt.Error{Code: libvirt.ERR_XML_INVALID_SCHEMA, Domain: libvirt.FROM_XML,
			Message: "XML document failed to validate against schema"}, errdefs.ErrInvalidArgument},
		{"no name", libvirt.Error{Code: libvirt.ERR_NO_NAME, Domain: libvirt.FROM_DOMAIN,
			Message: "missing name information"}, errdefs.ErrInvalidArgument},
		{"invalid arg", libvirt.Error{Code: libvirt.ERR_INVALID_ARG, Domain: libvirt.FROM_QEMU,
			Message: "invalid argument: unsupported flags (0x40) in function qemuDomainUndefineFlags"}, errdefs.ErrInvalidArgument},
		{"not a libvirt error", errors.New("boom"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translateError(`start domain "x"`, tc.err)
			if !strings.HasPrefix(got.Error(), `start domain "x": `) {
				t.Errorf("%q lacks the operation", got)
			}
			var lv libvirt.Error
			if errors.As(tc.err, &lv) {
				if !strings.Contains(got.Error(), lv.Message) {
					t.Errorf("%q lacks libvirt's message", got)
				}
				// The libvirt type must not leak above this package.
				if errors.As(got, &lv) {
					t.Errorf("%q wraps a libvirt.Error", got)
				}
			}
			classes := []error{errdefs.ErrNotFound, errdefs.ErrFailedPrecondition, errdefs.ErrAlreadyExists,
				errdefs.ErrUnavailable, errdefs.ErrInvalidArgument}
			for _, class := range classes {
				if want := class == tc.class; errors.Is(got, class) != want {
					t.Errorf("errors.Is(%q, %v) = %v, want %v", got, class, !want, want)
				}
			}
		})
	}
}

func TestStatusFromState(t *testing.T) {
	for _, tc := range []struct {
		state  libvirt.DomainState
		reason int
		want   DomainState
		why    ShutoffReason
	}{
		{libvirt.DOMAIN_NOSTATE, 0, DomainUnknown, ShutoffUnknown},
		{libvirt.DOMAIN_RUNNING, int(libvirt.DOMAIN_RUNNING_BOOTED), DomainRunning, ShutoffUnknown},
		{libvirt.DOMAIN_BLOCKED, 0, DomainRunning, ShutoffUnknown},
		{libvirt.DOMAIN_PMSUSPENDED, 0, DomainRunning, ShutoffUnknown},
		{libvirt.DOMAIN_SHUTDOWN, int(libvirt.DOMAIN_SHUTDOWN_USER), DomainRunning, ShutoffUnknown},
		{libvirt.DOMAIN_PAUSED, int(libvirt.DOMAIN_PAUSED_USER), DomainPaused, ShutoffUnknown},
		{libvirt.DOMAIN_CRASHED, int(libvirt.DOMAIN_CRASHED_PANICKED), DomainCrashed, ShutoffUnknown},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_UNKNOWN), DomainShutoff, ShutoffUnknown},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_SHUTDOWN), DomainShutoff, ShutoffShutdown},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_DESTROYED), DomainShutoff, ShutoffDestroyed},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_CRASHED), DomainShutoff, ShutoffCrashed},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_FAILED), DomainShutoff, ShutoffFailed},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_SAVED), DomainShutoff, ShutoffOther},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_MIGRATED), DomainShutoff, ShutoffOther},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_FROM_SNAPSHOT), DomainShutoff, ShutoffOther},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_DAEMON), DomainShutoff, ShutoffOther},
	} {
		state, why := statusFromState(tc.state, tc.reason)
		if state != tc.want || why != tc.why {
			t.Errorf("statusFromState(%d, %d) = %s/%s, want %s/%s", tc.state, tc.reason, state, why, tc.want, tc.why)
		}
	}
}

// testDomain is a tiny TCG domain: 64 MiB, one vCPU, a 1 MiB empty qcow2
// disk, no network or graphics. Without an OS the guest sits in the
// firmware, which ignores ACPI shutdown requests.
type testDomain struct {
	name, uuid string
	dir        string // holds the disk and, for UEFI, the NVRAM file
	uefi       bool
}

func newTestDomain(t *testing.T, uefi bool) testDomain {
	t.Helper()
	dir := t.TempDir()
	// QEMU runs as libvirt-qemu and must reach the disk.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "root.qcow2"), "1M").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return testDomain{name: "vmpodtest-" + randomHex(t, 4), uuid: randomUUID(t), dir: dir, uefi: uefi}
}

func (d testDomain) xml(t *testing.T) string { return d.xmlAs(t, d.name, d.uuid) }

func (d testDomain) xmlAs(t *testing.T, name, uuid string) string {
	t.Helper()
	dom := libvirtxml.Domain{
		Type: DomainTypeQEMU, Name: name, UUID: uuid,
		Memory: &libvirtxml.DomainMemory{Value: 64, Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: 1},
		OS: &libvirtxml.DomainOS{
			Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		OnPoweroff: "destroy", OnReboot: "destroy", OnCrash: "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{{
				Device: "disk",
				Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
				Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: filepath.Join(d.dir, "root.qcow2")}},
				Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
			}},
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
			MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	if d.uefi {
		dom.OS.Type.Machine = "q35"
		dom.OS.Loader = &libvirtxml.DomainLoader{Path: "/usr/share/OVMF/OVMF_CODE_4M.fd", Readonly: "yes", Type: "pflash"}
		dom.OS.NVRam = &libvirtxml.DomainNVRam{NVRam: d.nvram(), Template: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
	}
	doc, err := dom.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func (d testDomain) nvram() string { return filepath.Join(d.dir, "VARS.fd") }

// cleanup removes the domains called names however the code under test
// left them, with virsh so that it does not depend on that code.
func cleanup(t *testing.T, uri string, names ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, name := range names {
			exec.Command("virsh", "-c", uri, "destroy", name).Run()
			exec.Command("virsh", "-c", uri, "undefine", "--nvram", name).Run()
			if out, err := exec.Command("virsh", "-c", uri, "domstate", name).CombinedOutput(); err == nil {
				t.Errorf("domain %s still exists after cleanup: %s", name, out)
			}
		}
	})
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomUUID(t *testing.T) string {
	h := randomHex(t, 16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func wantClass(t *testing.T, what string, err, class error) {
	t.Helper()
	switch {
	case class == nil && err != nil:
		t.Fatalf("%s: %v", what, err)
	case class != nil && !errors.Is(err, class):
		t.Fatalf("%s: err = %v, want %v", what, err, class)
	case err != nil:
		t.Logf("%s: %v", what, err)
	}
}

func wantStatus(t *testing.T, l *Libvirt, d testDomain, state DomainState, reason ShutoffReason) {
	t.Helper()
	st, err := l.Status(context.Background(), d.name)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	want := DomainStatus{Name: d.name, UUID: d.uuid, State: state, Reason: reason}
	if st != want {
		t.Fatalf("Status = %+v, want %+v", st, want)
	}
}

func TestLibvirtDomainLifecycle(t *testing.T) {
	uri := libvirtURI(t)
	ctx := context.Background()
	d := newTestDomain(t, false)
	other := "vmpodtest-" + randomHex(t, 4) // never to be defined
	cleanup(t, uri, d.name, other)
	l := NewLibvirt(uri, Options{})
	defer l.Close()

	wantClass(t, "Define", l.Define(ctx, d.xml(t)), nil)
	wantStatus(t, l, d, DomainShutoff, ShutoffUnknown)
	list, err := l.List(ctx, d.name)
	if err != nil || len(list) != 1 || list[0] != (DomainStatus{Name: d.name, UUID: d.uuid, State: DomainShutoff}) {
		t.Fatalf("List of a defined domain = %+v, %v", list, err)
	}

	wantClass(t, "Start paused", l.Start(ctx, d.name, true), nil)
	wantStatus(t, l, d, DomainPaused, ShutoffUnknown)
	wantClass(t, "Start of a paused domain", l.Start(ctx, d.name, false), errdefs.ErrFailedPrecondition)
	wantClass(t, "Undefine of a paused domain", l.Undefine(ctx, d.name), errdefs.ErrFailedPrecondition)
	wantClass(t, "Shutdown of a paused domain", l.Shutdown(ctx, d.name), errdefs.ErrFailedPrecondition)

	wantClass(t, "Resume", l.Resume(ctx, d.name), nil)
	wantStatus(t, l, d, DomainRunning, ShutoffUnknown)
	wantClass(t, "Resume of a running domain", l.Resume(ctx, d.name), errdefs.ErrFailedPrecondition)
	// Stats asks about the named domains only; a name not defined is left out.
	stats, err := l.Stats(ctx, []string{d.name, other})
	if err != nil || len(stats) != 1 || stats[0].Name != d.name || !stats[0].Running || !stats[0].HasCPU || !stats[0].HasMemory {
		t.Fatalf("Stats(%s, %s) = %+v, %v; want the running domain's only", d.name, other, stats, err)
	}

	list, err = l.List(ctx, "vmpodtest-")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range list {
		if !strings.HasPrefix(st.Name, "vmpodtest-") {
			t.Errorf("List(vmpodtest-) returned %s", st.Name)
		}
		if st.Name == d.name {
			found = true
			if st != (DomainStatus{Name: d.name, UUID: d.uuid, State: DomainRunning}) {
				t.Errorf("List: %+v", st)
			}
		}
	}
	if !found {
		t.Errorf("List(vmpodtest-) = %+v lacks %s", list, d.name)
	}

	live, err := l.XML(ctx, d.name)
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(live); err != nil {
		t.Fatal(err)
	}
	if dom.Name != d.name || dom.UUID != d.uuid || dom.ID == nil {
		t.Errorf("live XML: name %q uuid %q id %v", dom.Name, dom.UUID, dom.ID)
	}

	wantClass(t, "SetCPUTune live", l.SetCPUTune(ctx, d.name, 2048, 100000, 50000), nil)
	wantCPUTune(t, l, d, 2048, 100000, 50000)

	// The firmware ignores the ACPI power button.
	wantClass(t, "Shutdown", l.Shutdown(ctx, d.name), nil)
	start := time.Now()
	off, err := l.WaitShutoff(ctx, d.name, 500*time.Millisecond)
	if err != nil || off {
		t.Fatalf("WaitShutoff with a guest ignoring ACPI = %v, %v", off, err)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 5*time.Second {
		t.Errorf("WaitShutoff(500ms) took %s", took)
	}

	wantClass(t, "Destroy", l.Destroy(ctx, d.name), nil)
	wantStatus(t, l, d, DomainShutoff, ShutoffDestroyed)
	wantClass(t, "Destroy of a shut-off domain", l.Destroy(ctx, d.name), nil)
	wantClass(t, "Resume of a shut-off domain", l.Resume(ctx, d.name), errdefs.ErrFailedPrecondition)
	if off, err := l.WaitShutoff(ctx, d.name, time.Minute); err != nil || !off {
		t.Fatalf("WaitShutoff of a shut-off domain = %v, %v", off, err)
	}

	wantClass(t, "SetCPUTune config", l.SetCPUTune(ctx, d.name, 1024, 0, -1), nil)
	wantCPUTune(t, l, d, 1024, 100000, -1)

	wantClass(t, "redefine", l.Define(ctx, d.xml(t)), nil)
	wantClass(t, "Define of the UUID under another name", l.Define(ctx, d.xmlAs(t, other, d.uuid)), errdefs.ErrAlreadyExists)
	wantClass(t, "Define of the name with another UUID", l.Define(ctx, d.xmlAs(t, d.name, randomUUID(t))), errdefs.ErrAlreadyExists)
	wantClass(t, "Define of malformed XML", l.Define(ctx, "<domain type='qemu'><name>"+other), errdefs.ErrInvalidArgument)
	wantClass(t, "Define of an unknown domain type", l.Define(ctx, strings.Replace(d.xmlAs(t, other, randomUUID(t)), `type="qemu"`, `type="bogus"`, 1)), errdefs.ErrInvalidArgument)
	wantClass(t, "Define without a name", l.Define(ctx, d.xmlAs(t, "", randomUUID(t))), errdefs.ErrInvalidArgument)

	wantClass(t, "Undefine", l.Undefine(ctx, d.name), nil)
	wantClass(t, "Undefine of a missing domain", l.Undefine(ctx, d.name), nil)
	_, err = l.Status(ctx, d.name)
	wantClass(t, "Status of a missing domain", err, errdefs.ErrNotFound)
	_, err = l.XML(ctx, d.name)
	wantClass(t, "XML of a missing domain", err, errdefs.ErrNotFound)
	wantClass(t, "Start of a missing domain", l.Start(ctx, d.name, false), errdefs.ErrNotFound)
	wantClass(t, "Destroy of a missing domain", l.Destroy(ctx, d.name), errdefs.ErrNotFound)
	_, err = l.WaitShutoff(ctx, d.name, time.Second)
	wantClass(t, "WaitShutoff of a missing domain", err, errdefs.ErrNotFound)
	if list, err := l.List(ctx, d.name); err != nil || len(list) != 0 {
		t.Errorf("List after Undefine = %+v, %v", list, err)
	}
	if list, err := l.List(ctx, other); err != nil || len(list) != 0 {
		t.Errorf("List(%s) = %+v, %v", other, list, err)
	}
}

func wantCPUTune(t *testing.T, l *Libvirt, d testDomain, shares uint, period uint64, quota int64) {
	t.Helper()
	doc, err := l.XML(context.Background(), d.name)
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		t.Fatal(err)
	}
	tune := dom.CPUTune
	if tune == nil || tune.Shares == nil || tune.Shares.Value != shares || tune.GlobalPeriod == nil ||
		tune.GlobalPeriod.Value != period || tune.GlobalQuota == nil || tune.GlobalQuota.Value != quota {
		t.Fatalf("cputune = %s, want shares %d global_period %d global_quota %d", cpuTuneString(tune), shares, period, quota)
	}
}

func cpuTuneString(tune *libvirtxml.DomainCPUTune) string {
	if tune == nil {
		return "none"
	}
	s := ""
	if tune.Shares != nil {
		s += fmt.Sprintf(" shares %d", tune.Shares.Value)
	}
	if tune.GlobalPeriod != nil {
		s += fmt.Sprintf(" global_period %d", tune.GlobalPeriod.Value)
	}
	if tune.GlobalQuota != nil {
		s += fmt.Sprintf(" global_quota %d", tune.GlobalQuota.Value)
	}
	return s
}

// TestLibvirtUndefineRemovesNVRAM checks that Undefine of a UEFI domain
// works at all (libvirt refuses without the NVRAM flag) and removes the
// NVRAM file libvirt created from the template.
func TestLibvirtUndefineRemovesNVRAM(t *testing.T) {
	uri := libvirtURI(t)
	if _, err := os.Stat("/usr/share/OVMF/OVMF_CODE_4M.fd"); err != nil {
		t.Skip("no OVMF:", err)
	}
	ctx := context.Background()
	d := newTestDomain(t, true)
	cleanup(t, uri, d.name)
	l := NewLibvirt(uri, Options{})
	defer l.Close()

	wantClass(t, "Define", l.Define(ctx, d.xml(t)), nil)
	wantClass(t, "Start paused", l.Start(ctx, d.name, true), nil)
	wantClass(t, "Destroy", l.Destroy(ctx, d.name), nil)
	if _, err := os.Stat(d.nvram()); err != nil {
		t.Fatalf("libvirt created no NVRAM file: %v", err)
	}
	wantClass(t, "Undefine", l.Undefine(ctx, d.name), nil)
	if _, err := os.Stat(d.nvram()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NVRAM file after Undefine: %v", err)
	}
}

// TestLibvirtConcurrentAndReconnect shares one Libvirt between goroutines
// while it is closed under them, which makes the next calls reconnect.
func TestLibvirtConcurrentAndReconnect(t *testing.T) {
	uri := libvirtURI(t)
	ctx := context.Background()
	d := newTestDomain(t, false)
	cleanup(t, uri, d.name)
	l := NewLibvirt(uri, Options{})
	defer l.Close()
	wantClass(t, "Define", l.Define(ctx, d.xml(t)), nil)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				if i == 0 && j%5 == 0 {
					l.Close()
				}
				if _, err := l.Status(ctx, d.name); err != nil {
					t.Errorf("Status: %v", err)
					return
				}
				if _, err := l.List(ctx, "vmpodtest-"); err != nil {
					t.Errorf("List: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	wantClass(t, "Undefine", l.Undefine(ctx, d.name), nil)

	dead := NewLibvirt("qemu+unix:///system?socket=/nonexistent/libvirt-sock", Options{CallTimeout: time.Second})
	_, err := dead.Status(ctx, d.name)
	wantClass(t, "Status without libvirtd", err, errdefs.ErrUnavailable)
	_, err = dead.Ping(ctx)
	wantClass(t, "Ping without libvirtd", err, errdefs.ErrUnavailable)
}
