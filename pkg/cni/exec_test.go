package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
)

// hangingPlugin writes a CNI plugin script that hangs on a command while
// the file dir/hang-<command> exists (a shell waiting for a `sleep` child
// that holds its stdout, the case a plain kill of the plugin does not
// end) and runs the real bridge plugin otherwise. It records its own and
// its child's PID in dir. The commands in hangOn start hanging.
func hangingPlugin(t *testing.T, dir string, hangOn ...string) (bin string) {
	t.Helper()
	bin = filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
if [ -e %q/hang-$CNI_COMMAND ]; then
	echo $$ > %q
	sleep 300 &
	echo $! > %q
	wait
fi
for d in /usr/lib/cni /opt/cni/bin; do [ -x $d/bridge ] && exec $d/bridge; done
exit 1
`, dir, filepath.Join(dir, "plugin.pid"), filepath.Join(dir, "child.pid"))
	if err := os.WriteFile(filepath.Join(bin, "hang"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range hangOn {
		if err := os.WriteFile(filepath.Join(dir, "hang-"+cmd), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// hangConf writes a network config using the "hang" plugin.
func hangConf(t *testing.T, dir, bridge, subnet string) string {
	t.Helper()
	conf := filepath.Join(dir, "net.d")
	os.MkdirAll(conf, 0o755)
	body := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"vmpod-hang","plugins":[{"type":"hang","bridge":%q,"isGateway":true,
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}}]}`, bridge, filepath.Join(dir, "ipam"), subnet)
	if err := os.WriteFile(filepath.Join(conf, "10-hang.conflist"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// processGone reports whether the PID recorded in file no longer runs (or
// is a zombie waiting for its parent).
func processGone(t *testing.T, file string) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the plugin did not record its PID: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// TestHungPluginKilledAtDeadline: a CNI ADD and a DEL whose plugin hangs
// return within cni_timeout plus the pipe grace with an Unavailable error
// naming cni_timeout, and the plugin and its child are gone. No root
// needed: the plugin never gets to touch a netns.
func TestHungPluginKilledAtDeadline(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, cmd := range []string{"ADD", "DEL"} {
		t.Run(cmd, func(t *testing.T) {
			dir := t.TempDir()
			bin := hangingPlugin(t, dir, cmd)
			conf := hangConf(t, dir, "vmpodhang0", "10.250.78.0/24")
			m := NewManager(Config{ConfDir: conf, BinDirs: []string{bin}, CacheDir: filepath.Join(dir, "cache"), Timeout: time.Second},
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			att, err := m.Plan(fmt.Sprintf("%064x", 0xdead), PodInfo{Namespace: "ns", Name: "p", UID: "u"})
			if err != nil {
				t.Fatal(err)
			}
			list, err := confListFromBytes(att.ConfList)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if cmd == "ADD" {
				_, err = m.add(context.Background(), list, att)
			} else {
				err = m.del(context.Background(), list, att, "")
			}
			took := time.Since(t0)
			if err == nil {
				t.Fatal("a hung plugin succeeded")
			}
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "did not finish within cni_timeout (1s)") ||
				!strings.Contains(err.Error(), "CNI "+cmd+" of network \"vmpod-hang\"") || !strings.Contains(err.Error(), filepath.Join(bin, "hang")) {
				t.Fatalf("err = %v; want Unavailable naming the network, the plugin and cni_timeout", err)
			}
			if took > time.Second+pluginWaitDelay+time.Second {
				t.Fatalf("%s returned after %s, want about the 1s deadline", cmd, took)
			}
			deadline := time.Now().Add(2 * time.Second)
			for !processGone(t, filepath.Join(dir, "plugin.pid")) || !processGone(t, filepath.Join(dir, "child.pid")) {
				if time.Now().After(deadline) {
					t.Fatal("the hung plugin or its child still runs after the deadline")
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s failed after %s: %v", cmd, took.Round(time.Millisecond), err)
		})
	}
}

// TestSetupAndTeardownWithHungPlugin: with the real netns, a Setup whose
// ADD hangs and the Teardown after it (whose DEL hangs too) each end at
// the deadline, and nothing is left. Root only.
func TestSetupAndTeardownWithHungPlugin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	pluginDir(t)
	dir := t.TempDir()
	bin := hangingPlugin(t, dir, "ADD", "DEL")
	conf := hangConf(t, dir, "vmpodhang1", "10.250.79.0/24")
	m := NewManager(Config{ConfDir: conf, BinDirs: []string{bin}, CacheDir: filepath.Join(dir, "cache"), Timeout: time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	att, err := m.Plan(fmt.Sprintf("%064x", 0xdeae), PodInfo{Namespace: "ns", Name: "p", UID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	err = m.Setup(ctx, att, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || time.Since(t0) > 4*time.Second {
		t.Fatalf("Setup with a hung ADD: %v after %s; want Unavailable after about 1s", err, time.Since(t0))
	}
	t0 = time.Now()
	err = m.Teardown(ctx, att)
	if !errors.Is(err, errdefs.ErrUnavailable) || time.Since(t0) > 4*time.Second {
		t.Fatalf("Teardown with a hung DEL: %v after %s; want Unavailable after about 1s", err, time.Since(t0))
	}
	if left := LeakCheck(att); len(left) > 0 {
		t.Fatalf("left after the failed setup and teardown: %v", left)
	}
}

// TestHungDelKeepsNetNSForTheRetry: after a completed ADD, a Teardown
// whose DEL hangs fails at the deadline and keeps the netns; once the
// plugin answers, the retried Teardown leaves nothing, not even the
// bridge plugin's ipMasq rules (which it finds from the pod interface's
// addresses, inside the netns). Root only.
func TestHungDelKeepsNetNSForTheRetry(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	real := pluginDir(t)
	dir := t.TempDir()
	bin := hangingPlugin(t, dir)
	conf := hangConf(t, dir, "vmpodhang2", "10.250.80.0/24")
	body, _ := os.ReadFile(filepath.Join(conf, "10-hang.conflist"))
	os.WriteFile(filepath.Join(conf, "10-hang.conflist"), []byte(strings.Replace(string(body), `"isGateway":true`, `"isGateway":true,"ipMasq":true`, 1)), 0o644)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("vmpodhang2"); err == nil {
			netlink.LinkDel(l)
		}
	})
	m := NewManager(Config{ConfDir: conf, BinDirs: []string{bin, real}, CacheDir: filepath.Join(dir, "cache"), Timeout: time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	id := fmt.Sprintf("%064x", 0xdeaf)
	att, err := m.Plan(id, PodInfo{Namespace: "ns", Name: "p", UID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { os.Remove(filepath.Join(dir, "hang-DEL")); m.Teardown(ctx, att) })
	if err := m.Setup(ctx, att, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "hang-DEL"), nil, 0o644)
	if err := m.Teardown(ctx, att); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Teardown with a hung DEL: %v, want Unavailable", err)
	}
	if !isNetNS(att.NetNS) {
		t.Fatal("the netns went with a failed DEL: the retry cannot find the ipMasq rules")
	}
	os.Remove(filepath.Join(dir, "hang-DEL"))
	if err := m.Teardown(ctx, att); err != nil {
		t.Fatalf("retried Teardown: %v", err)
	}
	if left := LeakCheck(att); len(left) > 0 {
		t.Fatalf("left after the retried teardown: %v", left)
	}
	if out, err := exec.Command("iptables-save", "-t", "nat").Output(); err == nil && strings.Contains(string(out), id) {
		t.Fatalf("iptables rules naming the sandbox left after the retried teardown:\n%s", out)
	}
}

// TestPluginLeavingAChildIsNotHeld: a plugin that answers and exits 0 but
// leaves a background child holding its stdout succeeds after the pipe
// grace, instead of holding the call until the child ends. No root.
func TestPluginLeavingAChildIsNotHeld(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nsleep 8 &\necho '{\"cniVersion\":\"1.0.0\"}'\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "daemonish"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "net.d")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "10.conflist"), []byte(`{"cniVersion":"1.0.0","name":"d","plugins":[{"type":"daemonish"}]}`), 0o644)
	m := NewManager(Config{ConfDir: conf, BinDirs: []string{dir}, CacheDir: filepath.Join(dir, "cache"), Timeout: 20 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	att, err := m.Plan(fmt.Sprintf("%064x", 0xd0), PodInfo{Namespace: "ns", Name: "p", UID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := confListFromBytes(att.ConfList)
	t0 := time.Now()
	if _, err := m.add(context.Background(), list, att); err != nil {
		t.Fatalf("ADD of a plugin that exited 0: %v", err)
	}
	if took := time.Since(t0); took > pluginWaitDelay+2*time.Second {
		t.Fatalf("ADD took %s: held by the plugin's child", took)
	}
}
