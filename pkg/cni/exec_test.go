package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// hangingPlugin writes a CNI plugin script that hangs on the given
// commands (a shell waiting for a `sleep` child that holds its stdout, the
// case a plain kill of the plugin does not end) and runs the real bridge
// plugin otherwise. It records its own and its child's PID in dir.
func hangingPlugin(t *testing.T, dir string, hangOn ...string) (bin string) {
	t.Helper()
	bin = filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
case " %s " in
*" $CNI_COMMAND "*)
	echo $$ > %q
	sleep 300 &
	echo $! > %q
	wait
	;;
esac
exec /usr/lib/cni/bridge
`, strings.Join(hangOn, " "), filepath.Join(dir, "plugin.pid"), filepath.Join(dir, "child.pid"))
	if err := os.WriteFile(filepath.Join(bin, "hang"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
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
