package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A public key made for this test with ssh-keygen (its private half was discarded).
const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFVYXzjnO2pmCi27Bm6hSvQQtLcHpJQZlzxRBkdbCbaF e2e@vmpod"

func TestCloudInitAndVolumes(t *testing.T) {
	guest := guestImage(t)
	srv := newFileServer(t)
	run(t, "cp", guest, srv.path("guest.qcow2"))
	// Debian's cloud kernel has virtiofs but no 9p: the default
	// shared_dir_type (virtiofs) must work with it.
	d := startDaemon(t, daemonOpts{})
	d.writeTranslations("guest.toml", fmt.Sprintf("[[translations]]\nname = \"guest\"\nurl = \"%s/guest.qcow2\"\n", srv.URL))
	d.mustCrictl("pull", "guest")
	e := &vmEnv{daemon: d, logDir: filepath.Join(d.dir, "pods")}
	t.Cleanup(e.cleanupAll)

	// A ConfigMap-like file, a hostPath directory and a raw block device.
	cm := filepath.Join(d.dir, "cm-app.conf")
	if err := os.WriteFile(cm, []byte("color=blue-42\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	share := filepath.Join(d.dir, "share")
	if err := os.MkdirAll(share, 0o777); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(share, "from-host.txt"), []byte("host-says-hi\n"), 0o644)
	// A read-only share the guest tries to write anyway (as root, after
	// remounting it read-write: the guest's own mount options are its to
	// change, so only the host's enforcement counts).
	roShare := filepath.Join(d.dir, "ro-share")
	if err := os.MkdirAll(roShare, 0o777); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(roShare, "secret.txt"), []byte("ro-content-9\n"), 0o644)
	blk := filepath.Join(d.dir, "block.img")
	f, err := os.Create(blk)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("BLOCKDATA-7\n")
	f.Truncate(4 << 20)
	f.Close()
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", blk))
	t.Cleanup(func() { run(t, "losetup", "-d", loop) })

	userData := `#cloud-config
runcmd:
  - [sh, -c, "echo ud-runcmd-ok"]
  - [sh, -c, "echo cm=$(cat /etc/app/app.conf)"]
  - [sh, -c, ". /etc/environment; echo env=$GREETING"]
  - [sh, -c, "cat /mnt/share/from-host.txt; echo guest-was-here > /mnt/share/from-guest.txt; echo share-written"]
  - [sh, -c, "echo blk=$(head -c 11 /dev/xvol)"]
  - [sh, -c, "echo ro=$(cat /mnt/ro/secret.txt); mount -o remount,rw /mnt/ro; if echo evil > /mnt/ro/evil; then echo ro-write-succeeded; else echo ro-write-refused; fi"]
  - [sh, -c, "echo keys=$(wc -l < /root/.ssh/authorized_keys)"]
`
	pod := map[string]any{
		"metadata":      map[string]any{"name": "ci", "namespace": "e2e", "uid": "uid-ci"},
		"hostname":      "ci-host-1",
		"log_directory": filepath.Join(e.logDir, "ci"),
		"annotations": map[string]string{
			"vmpod.dev/cloud-init-user-data": userData,
			"vmpod.dev/ssh-authorized-keys":  testSSHKey,
		},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "vm"},
		"image":    map[string]any{"image": "guest"},
		"log_path": "vm/0.log",
		"envs":     []map[string]string{{"key": "GREETING", "value": "hello from env"}},
		"mounts": []map[string]any{
			{"container_path": "/etc/app/app.conf", "host_path": cm, "readonly": true},
			{"container_path": "/mnt/share", "host_path": share},
			{"container_path": "/mnt/ro", "host_path": roShare, "readonly": true},
		},
		"devices": []map[string]any{{"container_path": "/dev/xvol", "host_path": loop, "permissions": "rw"}},
	}
	pf := podFiles{pod: e.writeJSON("ci-pod.json", pod), ctr: e.writeJSON("ci-ctr.json", ctr), logPath: filepath.Join(e.logDir, "ci", "vm/0.log")}
	_, ctrID := e.startVM(pf)
	waitLog(t, pf.logPath, readyRE, bootTimeout)
	for _, want := range []string{
		`vmpod-test-guest hostname=ci-host-1`,
		`ud-runcmd-ok`,
		`cm=color=blue-42`,
		`env=hello from env`,
		`host-says-hi`,
		`share-written`,
		`blk=BLOCKDATA-7`,
		`keys=1`,
		`ro=ro-content-9`,
		`ro-write-refused`,
	} {
		waitLog(t, pf.logPath, regexp.MustCompile(regexp.QuoteMeta(want)), 60*time.Second)
	}
	// vmpod's share check runs after the user's runcmd: once cloud-init is
	// done, no mounted share may be reported as not mounted.
	waitLog(t, pf.logPath, regexp.MustCompile(`vmpod-test-guest cloud-init done`), 60*time.Second)
	if log := readFile(t, pf.logPath); strings.Contains(log, "is not mounted at") {
		t.Fatalf("a mounted share is reported as not mounted:\n%s", log)
	}
	if b, err := os.ReadFile(filepath.Join(share, "from-guest.txt")); err != nil || strings.TrimSpace(string(b)) != "guest-was-here" {
		t.Fatalf("file written by the guest into the share: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(roShare, "evil")); !os.IsNotExist(err) {
		t.Fatalf("the guest wrote into a read-only share (stat: %v)", err)
	}
	if strings.Contains(readFile(t, pf.logPath), "ro-write-succeeded") {
		t.Fatal("the guest reports a write into the read-only share")
	}
	checkPrivateFiles(t, d, ctrID)
}

// checkPrivateFiles checks the modes of a VM's files (the seed carries the
// container's env, Secret files and keys) and that a node user other than
// root and QEMU cannot read them.
func checkPrivateFiles(t *testing.T, d *daemon, ctrID string) {
	t.Helper()
	ctrDir := filepath.Join(d.StateDir(), "containers", ctrID)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(d.StateDir(), "metadata.db"), 0o600},
		{filepath.Join(d.StateDir(), "containers"), 0o710},
		{ctrDir, 0o710},
		{filepath.Join(ctrDir, "seed.iso"), 0o600},
		{filepath.Join(ctrDir, "root.qcow2"), 0o600},
	} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode().Perm(), c.mode)
		}
	}
	// As nobody: not even the directory can be entered.
	out, err := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"cat", filepath.Join(ctrDir, "seed.iso")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("user nobody reading the seed: %v: %.200s", err, out)
	}
}

// TestShareNotMountedIsReported: with 9p, which the test guest's Debian
// cloud kernel lacks, the share cannot be mounted: the guest says so on
// its console (the container's log), and vmpod reports it.
func TestShareNotMountedIsReported(t *testing.T) {
	e := newVMEnvWith(t, daemonOpts{extraEnv: []string{"VMPOD_SHARED_DIR_TYPE=9p"}})
	share := filepath.Join(e.daemon.dir, "share9p")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	f := e.podConfigs("nine", 0, nil)
	e.addMount(f, "/mnt/nine", share)
	_, ctrID := e.startVM(f)
	want := "vmpod: share vmpod-fs0 (9p) is not mounted at /mnt/nine"
	waitLog(t, f.logPath, regexp.MustCompile(regexp.QuoteMeta(want)), bootTimeout)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.mustCrictl("inspect", ctrID), want) {
		if time.Now().After(deadline) {
			t.Fatalf("crictl inspect does not report the share: %s", e.mustCrictl("inspect", ctrID))
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(e.daemon.Log(), "the guest reports a share it could not mount") {
		t.Error("vmpod's log does not report the share")
	}
}

func TestCloudInitAnnotationsRejected(t *testing.T) {
	e := newVMEnv(t)
	for i, tc := range []struct {
		key, value, want string
	}{
		{"vmpod.dev/ssh-authorized-keys", "ssh-rsa not-a-key", "line 1"},
		{"vmpod.dev/cloud-init-meta-data", "a: [unclosed", "vmpod.dev/cloud-init-meta-data"},
		{"vmpod.dev/cloud-init-datasource", "ec2", "vmpod.dev/cloud-init-datasource"},
		{"vmpod.dev/cloud-init-user-data", "#cloud-config\n" + strings.Repeat("#", 64<<10), "bytes"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			f := e.podConfigs(fmt.Sprintf("cibad%d", i), 0, map[string]string{tc.key: tc.value})
			errOut := e.failCrictl("runp", f.pod)
			if !strings.Contains(errOut, "InvalidArgument") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("runp with a bad %s: %s", tc.key, errOut)
			}
		})
	}
	if out := e.mustCrictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("refused pods left: %q", out)
	}
}

func TestCloudInitConfigDrive(t *testing.T) {
	e := newVMEnv(t)
	f, _ := e.bootVM("cd", map[string]string{
		"vmpod.dev/cloud-init-datasource": "configdrive",
		"vmpod.dev/ssh-authorized-keys":   testSSHKey,
		"vmpod.dev/cloud-init-user-data":  "#!/bin/sh\necho script-ran-$((20+1))\n",
	})
	for _, want := range []string{
		"vmpod-test-guest cloud-init datasource=configdrive",
		"script-ran-21",
		"vmpod-test-guest hostname=cd",
	} {
		waitLog(t, f.logPath, regexp.MustCompile(regexp.QuoteMeta(want)), 30*time.Second)
	}
}
