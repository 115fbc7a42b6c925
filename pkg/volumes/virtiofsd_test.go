package volumes

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The test binary plays vmpod-virtiofsd-ro when asked to (a subprocess:
// the wrapper ends in exec).
func TestMain(m *testing.M) {
	if os.Getenv("VMPOD_TEST_AS_VIRTIOFSD_RO") == "1" {
		if err := RunReadOnlyVirtiofsd(os.Args[1:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
	}
	os.Exit(m.Run())
}

func TestVirtiofsdSource(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--fd=3", "-o", "source=/var/lib/kubelet/pods/x/vol,xattr,cache=always"}, "/var/lib/kubelet/pods/x/vol"},
		{[]string{"--fd=3", "-o", "xattr,source=/a,,b,sandbox=chroot"}, "/a,b"},
		{[]string{"--fd=3", "-osource=/c"}, "/c"},
		{[]string{"--print-capabilities"}, ""},
	} {
		got, ok := virtiofsdSource(tc.args)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("virtiofsdSource(%q) = %q, %v; want %q", tc.args, got, ok, tc.want)
		}
	}
}

// TestReadOnlyVirtiofsd runs the wrapper over a fake virtiofsd that tries
// to write into the share and into a mount below it: both fail, while the
// same directories stay writable on the host.
func TestReadOnlyVirtiofsd(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	sub := filepath.Join(share, "sub")
	os.MkdirAll(sub, 0o755)
	// A mount below the share (a PVC inside a hostPath, say).
	subSrc := filepath.Join(dir, "subsrc")
	os.MkdirAll(subSrc, 0o755)
	if out, err := exec.Command("mount", "--bind", subSrc, sub).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", sub).Run() })

	fake := filepath.Join(dir, "virtiofsd")
	os.WriteFile(fake, []byte(`#!/bin/sh
# args: --fd=N -o source=DIR,...
echo "args=$*"
touch "$SHARE/top" 2>/dev/null && echo top=written || echo top=refused
touch "$SHARE/sub/below" 2>/dev/null && echo sub=written || echo sub=refused
`), 0o755)
	cmd := exec.Command(os.Args[0], "--fd=3", "-o", "source="+share+",xattr")
	cmd.Env = append(os.Environ(), "VMPOD_TEST_AS_VIRTIOFSD_RO=1", "VMPOD_VIRTIOFSD="+fake, "SHARE="+share)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrapper: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if !slices.Contains(lines, "top=refused") || !slices.Contains(lines, "sub=refused") {
		t.Fatalf("writes through the wrapper were not refused:\n%s", out)
	}
	if !slices.Contains(lines, "args=--fd=3 -o source="+share+",xattr") {
		t.Fatalf("virtiofsd did not get libvirt's arguments:\n%s", out)
	}
	// The host's view is untouched.
	for _, p := range []string{filepath.Join(share, "host-top"), filepath.Join(sub, "host-below")} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatalf("the host can no longer write %s: %v", p, err)
		}
	}
}
