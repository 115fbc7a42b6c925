package daemon

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// kvmUsable reports whether /dev/kvm can be opened, which decides the
// "auto" accelerator.
func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// checkKVMAccess explains, when /dev/kvm exists but QEMU (running as the
// libvirt-qemu user, group kvm) cannot open it, why every domain create will
// take about a minute: libvirt then re-probes QEMU's capabilities on every
// call. It returns "" when all is well.
func checkKVMAccess() string {
	st, err := os.Stat("/dev/kvm")
	if err != nil {
		return "" // no KVM: TCG only, nothing to fix here
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	kvm, err := user.LookupGroup("kvm")
	if err != nil {
		return "/dev/kvm exists but there is no kvm group; QEMU may not open it and libvirt then re-probes QEMU on every call (domain creates take about a minute)"
	}
	gid, _ := strconv.Atoi(kvm.Gid)
	if int(sys.Gid) != gid || st.Mode().Perm()&0o060 != 0o060 {
		return fmt.Sprintf("/dev/kvm is %s with group id %d: QEMU (group kvm) cannot open it, so libvirt re-probes QEMU on every call and each domain create takes about a minute; fix: chgrp kvm /dev/kvm && chmod 0660 /dev/kvm",
			st.Mode().Perm(), sys.Gid)
	}
	return ""
}

// checkStateDirReachable explains when a parent of the state directory
// cannot be traversed by other users: QEMU runs as libvirt-qemu and must
// open the VMs' disks below it.
func checkStateDirReachable(stateDir string) string {
	for p := filepath.Clean(stateDir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Sprintf("%s has mode %s: QEMU (user libvirt-qemu) cannot reach the VM disks in the state dir %s; fix: chmod o+x %s", p, st.Mode().Perm(), stateDir, p)
		}
		if p == "/" || p == "." {
			return ""
		}
	}
}
