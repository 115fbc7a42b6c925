package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	toml "github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmpod.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func serveFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	d := Default()
	fs.String("socket", d.Socket, "")
	fs.String("state-dir", d.StateDir, "")
	fs.String("libvirt-uri", d.LibvirtURI, "")
	fs.String("log-level", d.LogLevel, "")
	return fs
}

func TestDefaultTOMLRoundTrips(t *testing.T) {
	b, err := DefaultTOML()
	if err != nil {
		t.Fatal(err)
	}
	// Every key is preceded by a comment line.
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, " = ") && (i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#")) {
			t.Errorf("key line %q has no comment above it", l)
		}
	}
	var got Config
	dec := toml.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("default TOML decodes to %+v, want %+v", got, Default())
	}
	// And Load of the printed file gives the defaults.
	c, err := Load(writeFile(t, string(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load(default file) = %+v", c)
	}
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "socket = '/file.sock'\nstate_dir = '/file-state'\nlog_level = 'warn'\nshutdown_timeout = '1m'\n")
	t.Setenv("VMPOD_STATE_DIR", "/env-state")
	t.Setenv("VMPOD_LIBVIRT_URI", "qemu:///session")
	fs := serveFlags()
	if err := fs.Parse([]string{"--log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, fs)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Socket = "/file.sock"                   // file, flag not set
	want.StateDir = "/env-state"                 // env beats file
	want.LibvirtURI = "qemu:///session"          // env beats default
	want.LogLevel = "debug"                      // set flag beats file
	want.ShutdownTimeout = Duration(time.Minute) // duration string
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "sockt = '/x'\n", "sockt"},
		{"bad level", "log_level = 'loud'\n", "log_level"},
		{"bad driver", "cgroup_driver = 'x'\n", "cgroupfs or systemd"},
		{"relative socket", "socket = 'x.sock'\n", "absolute path"},
		{"bad duration", "shutdown_timeout = 'soon'\n", "duration"},
		{"bad toml", "socket = \n", "config file"},
		{"bad metrics address", "metrics_address = '9810'\n", "metrics_address"},
		{"bad size", "max_image_size = 'lots'\n", "quantity"},
		{"fractional size", "max_image_size = '0.5'\n", "whole"},
		{"tiny size", "max_image_size = '4Ki'\n", "max_image_size"},
		{"zero stall", "pull_stall_timeout = '0s'\n", "pull_stall_timeout"},
		{"cni_timeout below 1s", "cni_timeout = '500ms'\n", "cni_timeout"},
		{"cni_timeout above 1h", "cni_timeout = '2h'\n", "cni_timeout"},
		{"cni_timeout zero", "cni_timeout = '0s'\n", "cni_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.body), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err %v is not InvalidArgument", err)
			}
		})
	}
}

func TestMetricsAddress(t *testing.T) {
	if d := Default().MetricsAddress; d != "" {
		t.Fatalf("metrics are on by default (%q)", d)
	}
	file := writeFile(t, "metrics_address = '127.0.0.1:9810'\n")
	c, err := Load(file, nil)
	if err != nil || c.MetricsAddress != "127.0.0.1:9810" {
		t.Fatalf("from the file: %q, %v", c.MetricsAddress, err)
	}
	t.Setenv("VMPOD_METRICS_ADDRESS", "127.0.0.1:9811")
	if c, err = Load(file, nil); err != nil || c.MetricsAddress != "127.0.0.1:9811" {
		t.Fatalf("from the environment: %q, %v", c.MetricsAddress, err)
	}
	fs := serveFlags()
	fs.String("metrics-address", "", "")
	if err := fs.Parse([]string{"--metrics-address=[::1]:9812"}); err != nil {
		t.Fatal(err)
	}
	if c, err = Load(file, fs); err != nil || c.MetricsAddress != "[::1]:9812" {
		t.Fatalf("from the flag: %q, %v", c.MetricsAddress, err)
	}
}

func TestCNITimeout(t *testing.T) {
	if d := Default().CNITimeout; d != Duration(time.Minute) {
		t.Fatalf("default cni_timeout %s, want 1m", time.Duration(d))
	}
	c, err := Load(writeFile(t, "cni_timeout = '20s'\n"), nil)
	if err != nil || c.CNITimeout.Std() != 20*time.Second {
		t.Fatalf("from the file: %s, %v", c.CNITimeout.Std(), err)
	}
	t.Setenv("VMPOD_CNI_TIMEOUT", "3s")
	if c, err = Load(writeFile(t, "cni_timeout = '20s'\n"), nil); err != nil || c.CNITimeout.Std() != 3*time.Second {
		t.Fatalf("from the environment: %s, %v", c.CNITimeout.Std(), err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.toml"), nil); err == nil {
		t.Fatal("explicit missing config file accepted")
	}
}

// The documentation shows the default configuration; keep it current.
func TestDocsShowDefaultConfig(t *testing.T) {
	b, err := DefaultTOML()
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"../../README.md", "../../docs/configuration.md"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), string(b)) {
			t.Errorf("%s does not contain the current `vmpod config default` output; run hack/update-config-docs.sh", doc)
		}
	}
}

func TestRuntimeHandlers(t *testing.T) {
	c, err := Load(writeFile(t, `
accelerator = "tcg"
tcg_tb_cache_mib = 256
default_runtime_handler = "vm"
[runtimes.vm]
vm_memory_overhead = "100Mi"
[runtimes.fast]
accelerator = "kvm"
tcg_tb_cache_mib = 64
vm_memory_overhead = "32Mi"
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want Handler
	}{
		{"", Handler{Name: "vm", Accelerator: "tcg", TCGTBCacheMiB: 256, VMMemoryOverhead: 100 << 20}},
		{"vm", Handler{Name: "vm", Accelerator: "tcg", TCGTBCacheMiB: 256, VMMemoryOverhead: 100 << 20}},
		{"fast", Handler{Name: "fast", Accelerator: "kvm", TCGTBCacheMiB: 64, VMMemoryOverhead: 32 << 20}},
	} {
		got, err := c.ResolveHandler(tc.name)
		if err != nil || got != tc.want {
			t.Errorf("ResolveHandler(%q) = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	// The overhead when the RuntimeClass declares none: under TCG the
	// translation cache on top.
	if vm, _ := c.ResolveHandler("vm"); vm.MemoryOverhead() != (100+256)<<20 {
		t.Errorf("tcg handler's overhead %d", vm.MemoryOverhead())
	}
	if d, _ := Default().ResolveHandler(""); d.VMMemoryOverhead != 64<<20 {
		t.Errorf("default overhead %d", d.VMMemoryOverhead)
	}
	if fast, _ := c.ResolveHandler("fast"); fast.MemoryOverhead() != 32<<20 {
		t.Errorf("kvm handler's overhead %d", fast.MemoryOverhead())
	}
	for _, bad := range []string{"vm_memory_overhead = '1Mi'\n", "vm_memory_overhead = '0'\n", "[runtimes.vmpod]\nvm_memory_overhead = '100Gi'\n"} {
		if _, err := Load(writeFile(t, bad), nil); err == nil || !strings.Contains(err.Error(), "vm_memory_overhead") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	_, err = c.ResolveHandler("runc")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "known: fast, vm") {
		t.Fatalf("unknown handler: %v", err)
	}
	if _, err := Load(writeFile(t, "default_runtime_handler = 'nope'\n"), nil); err == nil {
		t.Fatal("default handler without a table accepted")
	}
	if _, err := Load(writeFile(t, "[runtimes.x]\naccelerator = 'fast'\n"), nil); err == nil || !strings.Contains(err.Error(), "runtimes.x.accelerator") {
		t.Fatalf("bad handler accelerator: %v", err)
	}
}

func TestResolveAccelerators(t *testing.T) {
	c := Default()
	c.Runtimes = map[string]Runtime{"a": {}, "k": {Accelerator: "kvm"}, "t": {Accelerator: "tcg"}, "x": {Accelerator: "auto"}}
	for _, tc := range []struct {
		kvm  bool
		want map[string]string
	}{
		{true, map[string]string{"a": "kvm", "k": "kvm", "t": "tcg", "x": "kvm"}},
		{false, map[string]string{"a": "tcg", "k": "kvm", "t": "tcg", "x": "tcg"}},
	} {
		r := c.ResolveAccelerators(tc.kvm)
		for name, want := range tc.want {
			h, err := r.ResolveHandler(name)
			if err != nil || h.Accelerator != want {
				t.Errorf("kvm usable %v: handler %s runs %q (%v), want %q", tc.kvm, name, h.Accelerator, err, want)
			}
		}
	}
	if c.Accelerator != "auto" || c.Runtimes["x"].Accelerator != "auto" {
		t.Error("ResolveAccelerators changed the config it was called on")
	}
}

func TestImagePullKeys(t *testing.T) {
	d := Default()
	if d.MaxImageSize.Bytes() != 64<<30 || d.PullRequestTimeout.Std() != 30*time.Second || d.PullStallTimeout.Std() != time.Minute {
		t.Fatalf("defaults: %v %v %v", d.MaxImageSize, d.PullRequestTimeout, d.PullStallTimeout)
	}
	t.Setenv("VMPOD_MAX_IMAGE_SIZE", "256Mi")
	c, err := Load(writeFile(t, "max_image_size = '10G'\npull_request_timeout = '5s'\npull_stall_timeout = '2m'\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxImageSize.Bytes() != 256<<20 || c.PullRequestTimeout.Std() != 5*time.Second || c.PullStallTimeout.Std() != 2*time.Minute {
		t.Fatalf("loaded: %v %v %v", c.MaxImageSize, c.PullRequestTimeout, c.PullStallTimeout)
	}
	t.Setenv("VMPOD_MAX_IMAGE_SIZE", "")
	c, err = Load(writeFile(t, "max_image_size = '10G'\n"), nil)
	if err != nil || c.MaxImageSize.Bytes() != 10_000_000_000 {
		t.Fatalf("decimal quantity: %v, %v", c.MaxImageSize, err)
	}
}

// The DaemonSet's configuration (deploy/base/10-config.yaml) is `vmpod
// config default` with its own header and cgroup_driver = 'systemd', so
// a new key or changed help reaches it too.
func TestDeployConfigIsTheDefault(t *testing.T) {
	b, err := DefaultTOML()
	if err != nil {
		t.Fatal(err)
	}
	def := string(b)
	const header = "# vmpod configuration (default: /etc/vmpod/vmpod.toml).\n" +
		"# Every key can also be set as an environment variable VMPOD_<KEY> (upper case);\n" +
		"# command-line flags of 'vmpod serve' override both.\n"
	if !strings.HasPrefix(def, header) {
		t.Fatalf("the default configuration's header changed; update this test: %q", def[:200])
	}
	want := strings.Replace(def[len(header):], "cgroup_driver = 'cgroupfs'", "cgroup_driver = 'systemd'", 1)

	data, err := os.ReadFile("../../deploy/base/10-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "  vmpod.toml: |\n")
	if !ok {
		t.Fatal("deploy/base/10-config.yaml has no vmpod.toml block")
	}
	var got strings.Builder
	for _, line := range strings.Split(block, "\n") {
		if line != "" && !strings.HasPrefix(line, "    ") {
			break
		}
		got.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	// Past the DaemonSet's own header comment (up to its first key line).
	g := got.String()
	i := strings.Index(g, "\n# Path of the CRI gRPC unix socket")
	j := strings.Index(want, "# Path of the CRI gRPC unix socket")
	if i < 0 || j < 0 {
		t.Fatal("no socket key in the default or in the DaemonSet's configuration")
	}
	if strings.TrimRight(g[i+1:], "\n") != strings.TrimRight(want[j:], "\n") {
		t.Errorf("deploy/base/10-config.yaml's vmpod.toml is not `vmpod config default` with cgroup_driver = 'systemd': run hack/update-config-docs.sh")
	}
}
