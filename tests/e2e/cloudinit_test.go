package e2e

import (
	"fmt"
	"os"
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
	// Debian's cloud kernel has virtiofs but no 9p.
	d := startDaemon(t, daemonOpts{extraEnv: []string{"VMPOD_SHARED_DIR_TYPE=virtiofs"}})
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
		},
		"devices": []map[string]any{{"container_path": "/dev/xvol", "host_path": loop, "permissions": "rw"}},
	}
	pf := podFiles{pod: e.writeJSON("ci-pod.json", pod), ctr: e.writeJSON("ci-ctr.json", ctr), logPath: filepath.Join(e.logDir, "ci", "vm/0.log")}
	_, _ = e.startVM(pf)
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
	} {
		waitLog(t, pf.logPath, regexp.MustCompile(regexp.QuoteMeta(want)), 60*time.Second)
	}
	if b, err := os.ReadFile(filepath.Join(share, "from-guest.txt")); err != nil || strings.TrimSpace(string(b)) != "guest-was-here" {
		t.Fatalf("file written by the guest into the share: %q, %v", b, err)
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
