// Package config owns vmpod's configuration: the Config struct with its
// defaults, loading from the TOML file, VMPOD_* environment variables and
// command-line flags (in that order of precedence, lowest first), validation,
// and the commented default file printed by `vmpod config default`.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/go-viper/mapstructure/v2"
	toml "github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultConfigFile is where `vmpod serve` looks for its configuration when
// --config is not given. A missing default file means "all defaults".
const DefaultConfigFile = "/etc/vmpod/vmpod.toml"

// Config is the complete vmpod configuration. The toml tag is the key in the
// file (and, upper-cased with a VMPOD_ prefix, the environment variable); the
// comment tag is printed above the key by `vmpod config default`.
type Config struct {
	// Socket is the path of the CRI gRPC unix socket. Default /run/vmpod/vmpod.sock.
	Socket string `toml:"socket" mapstructure:"socket" comment:"Path of the CRI gRPC unix socket served to the kubelet and crictl (flag --socket, env VMPOD_SOCKET).\nCreated with mode 0660; parent directories are created."`
	// StateDir holds the metadata store, the image store and per-VM files. Default /var/lib/vmpod.
	StateDir string `toml:"state_dir" mapstructure:"state_dir" comment:"Directory for vmpod's state: metadata.db (bbolt), images/, VM disks (flag --state-dir, env VMPOD_STATE_DIR).\nOnly one vmpod may use a state directory at a time (vmpod.lock)."`
	// LibvirtURI is the libvirt connection URI. Default qemu:///system.
	LibvirtURI string `toml:"libvirt_uri" mapstructure:"libvirt_uri" comment:"libvirt connection URI (flag --libvirt-uri, env VMPOD_LIBVIRT_URI)."`
	// CreateTimeout bounds the work of one RunPodSandbox or CreateContainer.
	CreateTimeout Duration `toml:"create_timeout" mapstructure:"create_timeout" comment:"Deadline of the whole work of one RunPodSandbox or CreateContainer, which goes on when the kubelet's call\ngives up (its retry gets the result); past it the work fails and is rolled back (env VMPOD_CREATE_TIMEOUT)."`
	// ToolTimeout bounds one run of qemu-img create or genisoimage.
	ToolTimeout Duration `toml:"tool_timeout" mapstructure:"tool_timeout" comment:"Deadline of one run of a local tool vmpod starts for a VM: qemu-img creating a root overlay, genisoimage\nwriting a cloud-init seed (env VMPOD_TOOL_TIMEOUT)."`
	// StreamIdleTimeout ends an attach, exec or port-forward stream that
	// carried nothing for that long.
	StreamIdleTimeout Duration `toml:"stream_idle_timeout" mapstructure:"stream_idle_timeout" comment:"An attach, exec or port-forward connection that carries no data for this long is closed (the kubelet's\nstreamingConnectionIdleTimeout is 4h too) (env VMPOD_STREAM_IDLE_TIMEOUT)."`
	// AgentWaitTimeout caps how long an exec waits for a booting guest's agent.
	AgentWaitTimeout Duration `toml:"agent_wait_timeout" mapstructure:"agent_wait_timeout" comment:"How long an exec (kubectl exec, exec probes, crictl exec) waits for the guest agent of a VM that is still\nbooting before it fails; an ExecSync with a shorter timeout waits only that long (env VMPOD_AGENT_WAIT_TIMEOUT)."`
	// CommandStartTimeout bounds how long a VM whose container has a
	// command may take, from its start, until its guest agent answers and
	// the command starts. Default 10m.
	CommandStartTimeout Duration `toml:"command_start_timeout" mapstructure:"command_start_timeout" comment:"A container with a command runs it in the guest once the guest agent answers. If the agent has not answered\nthis long after the VM started, the command is given up: the container exits with 128, reason StartError,\nand the VM is shut down (env VMPOD_COMMAND_START_TIMEOUT)."`
	// CommandPoweroffTimeout is how long a VM whose command ended gets to
	// power off (ACPI) before it is destroyed. Default 30s.
	CommandPoweroffTimeout Duration `toml:"command_poweroff_timeout" mapstructure:"command_poweroff_timeout" comment:"When a container's command has ended, its VM is asked to power off (ACPI) and destroyed if it still runs\nafter this long; the container's exit code is the command's either way (env VMPOD_COMMAND_POWEROFF_TIMEOUT)."`
	// LibvirtCallTimeout is the deadline of one libvirt call. Default 30s.
	LibvirtCallTimeout Duration `toml:"libvirt_call_timeout" mapstructure:"libvirt_call_timeout" comment:"Deadline of one libvirt call, waiting for libvirtd to come back after a restart included: a hung\nlibvirtd makes calls fail with Unavailable after it. Domain start and destroy get twice as long, guest agent\ncommands their own timeout on top (env VMPOD_LIBVIRT_CALL_TIMEOUT). See docs/reliability.md."`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `toml:"log_level" mapstructure:"log_level" comment:"Log level: debug, info, warn or error (flag --log-level, env VMPOD_LOG_LEVEL).\nAt debug, the kubelet's polling calls (List*, *Status) are logged too."`
	// LogFormat is text or json. Default text.
	LogFormat string `toml:"log_format" mapstructure:"log_format" comment:"Log format: text or json (env VMPOD_LOG_FORMAT)."`
	// ImageTranslationsDir holds the image translation files (*.toml, *.yaml, *.yml).
	ImageTranslationsDir string `toml:"image_translations_dir" mapstructure:"image_translations_dir" comment:"Directory of image translation files (*.toml, *.yaml, *.yml) that map image names to URLs\n(env VMPOD_IMAGE_TRANSLATIONS_DIR). Re-read when they change. See docs/image-translation.md."`
	// CgroupDriver is reported to the kubelet by the RuntimeConfig RPC: cgroupfs or systemd.
	CgroupDriver string `toml:"cgroup_driver" mapstructure:"cgroup_driver" comment:"Cgroup driver reported to the kubelet (RuntimeConfig RPC): cgroupfs or systemd.\nMust match the kubelet's cgroupDriver setting (env VMPOD_CGROUP_DRIVER)."`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight calls.
	ShutdownTimeout Duration `toml:"shutdown_timeout" mapstructure:"shutdown_timeout" comment:"On SIGTERM, how long in-flight CRI calls may run before they are cancelled\n(a cancelled image pull removes its partial file) (env VMPOD_SHUTDOWN_TIMEOUT)."`
	// PullProgressInterval is how often a running pull logs its progress.
	PullProgressInterval Duration `toml:"pull_progress_interval" mapstructure:"pull_progress_interval" comment:"How often a running image pull logs bytes, percent and rate at info level\n(env VMPOD_PULL_PROGRESS_INTERVAL)."`
	// StatsInterval is how often the stats collector samples every running
	// VM (CPU, memory, root disk, the pod's network); the stats RPCs read
	// its samples.
	StatsInterval Duration `toml:"stats_interval" mapstructure:"stats_interval" comment:"How often vmpod samples the CPU, memory, root disk and network of every running VM (10ms to 1m); the\nstats RPCs answer from these samples, each stamped with its own time (env VMPOD_STATS_INTERVAL).\nSee docs/configuration.md."`
	// StatsMaxAge bounds a sampling round's libvirt call, and is the age
	// past which a VM's figure that could not be refreshed (its domain
	// busy) is reported as missing.
	StatsMaxAge Duration `toml:"stats_max_age" mapstructure:"stats_max_age" comment:"Oldest CPU or memory figure a stats RPC answers with: a VM's figure still older (libvirt kept skipping\nthe busy domain) is left out of the answer, and a sampling round's libvirt call gets no longer. At least\nstats_interval (env VMPOD_STATS_MAX_AGE)."`
	// ImageCheckCPUSeconds and ImageCheckMemoryMiB bound `qemu-img check` of a pulled qcow2.
	ImageCheckCPUSeconds int `toml:"image_check_cpu_seconds" mapstructure:"image_check_cpu_seconds" comment:"CPU-time limit, in seconds, for 'qemu-img check' when a pulled qcow2 image is checked\n(env VMPOD_IMAGE_CHECK_CPU_SECONDS)."`
	// ImageCheckMemoryMiB is the address-space limit for qemu-img check.
	ImageCheckMemoryMiB int `toml:"image_check_memory_mib" mapstructure:"image_check_memory_mib" comment:"Address-space limit, in MiB, for 'qemu-img check' when a pulled qcow2 image is checked\n(env VMPOD_IMAGE_CHECK_MEMORY_MIB)."`
	// RegistriesConf is the containers-registries.conf(5) file for OCI pulls.
	RegistriesConf string `toml:"registries_conf" mapstructure:"registries_conf" comment:"containers-registries.conf(5) file used for OCI registry pulls: mirrors, blocked registries,\n'insecure = true' for plain-HTTP registries, short-name resolution; a missing file means none\n(env VMPOD_REGISTRIES_CONF). CA files go in /etc/containers/certs.d/<host:port>/ca.crt."`
	// MaxImageSize bounds every pull: an HTTP(S) body, a registry blob, a decompressed layer, the disk.
	MaxImageSize ByteSize `toml:"max_image_size" mapstructure:"max_image_size" comment:"Largest image a pull may bring, as a quantity (64Gi, 500Mi): an HTTP(S) download, each registry blob,\neach layer once decompressed and the disk file. Beyond it the pull fails with ResourceExhausted\nand its partial file is removed (env VMPOD_MAX_IMAGE_SIZE)."`
	// PullRequestTimeout bounds each request of a pull until its answer.
	PullRequestTimeout Duration `toml:"pull_request_timeout" mapstructure:"pull_request_timeout" comment:"How long an image server or registry may take to accept a connection, finish the TLS handshake\nand answer a request; registry exchanges other than layer downloads (token, manifest, config) must\nfinish within it. Past it the pull fails with Unavailable (env VMPOD_PULL_REQUEST_TIMEOUT)."`
	// PullStallTimeout is how long a download may receive nothing.
	PullStallTimeout Duration `toml:"pull_stall_timeout" mapstructure:"pull_stall_timeout" comment:"How long an image download may receive no data before it fails with Unavailable and its partial\nfile is removed; a slow but steady download is not limited (env VMPOD_PULL_STALL_TIMEOUT)."`
	// StreamingAddress is where the CRI streaming server (attach) listens.
	StreamingAddress string `toml:"streaming_address" mapstructure:"streaming_address" comment:"host:port of the CRI streaming server (attach, exec, port-forward) that the kubelet proxies to.\nPort 0 picks a free port. It has no authentication: keep it on loopback (env VMPOD_STREAMING_ADDRESS)."`
	// MetricsAddress is the host:port of the Prometheus metrics endpoint
	// (/metrics); "" (the default) serves no metrics.
	MetricsAddress string `toml:"metrics_address" mapstructure:"metrics_address" comment:"host:port where Prometheus metrics are served at /metrics, e.g. '127.0.0.1:9810'; empty serves none.\nThe endpoint has no authentication: prefer loopback (flag --metrics-address, env VMPOD_METRICS_ADDRESS). See docs/configuration.md."`
	// Accelerator is kvm, tcg or auto for every handler that does not override it.
	Accelerator string `toml:"accelerator" mapstructure:"accelerator" comment:"How QEMU runs guests: kvm (libvirt domain type kvm), tcg (software emulation, domain type qemu)\nor auto (kvm when /dev/kvm can be opened, else tcg). Overridable per runtime handler (env VMPOD_ACCELERATOR)."`
	// MaxVMMemory, MaxVCPUs and MaxRootVolumeSize bound what a pod may ask
	// for (annotations and resources alike).
	MaxVMMemory ByteSize `toml:"max_vm_memory" mapstructure:"max_vm_memory" comment:"Most guest RAM a VM may get, from the vmpod.dev/memory annotation or the memory limit; more is refused\n(env VMPOD_MAX_VM_MEMORY)."`
	// MaxVCPUs is the most vCPUs a VM may get (at most 64).
	MaxVCPUs int `toml:"max_vcpus" mapstructure:"max_vcpus" comment:"Most vCPUs a VM may get, from the vmpod.dev/vcpus annotation or the CPU limit (1 to 64); an annotation\nasking for more is refused, a CPU limit above it gets this many (env VMPOD_MAX_VCPUS)."`
	// MaxRootVolumeSize bounds vmpod.dev/root-volume-size.
	MaxRootVolumeSize ByteSize `toml:"max_root_volume_size" mapstructure:"max_root_volume_size" comment:"Largest root disk a VM may ask for with vmpod.dev/root-volume-size; more is refused\n(env VMPOD_MAX_ROOT_VOLUME_SIZE)."`
	// DefaultMemoryMiB is guest RAM when the pod sets no memory limit or annotation.
	DefaultMemoryMiB int `toml:"default_memory_mib" mapstructure:"default_memory_mib" comment:"Guest RAM in MiB when the container has no memory limit and no vmpod.dev/memory annotation\n(env VMPOD_DEFAULT_MEMORY_MIB)."`
	// VMMemoryOverhead is the memory a VM's QEMU may use beyond its guest
	// RAM when the pod's RuntimeClass declares no memory overhead.
	VMMemoryOverhead ByteSize `toml:"vm_memory_overhead" mapstructure:"vm_memory_overhead" comment:"Memory a VM's QEMU may use beyond its guest RAM, as a quantity, when the pod's RuntimeClass declares no\nmemory overhead: a VM in its pod's cgroup (cgroup_parent) gets a memory limit of guest RAM plus the\nRuntimeClass's overhead, or else plus this (and, under TCG, plus tcg_tb_cache_mib). Overridable per\nruntime handler (env VMPOD_VM_MEMORY_OVERHEAD). See docs/resources.md."`
	// TCGTBCacheMiB caps QEMU's TCG translation cache.
	TCGTBCacheMiB int `toml:"tcg_tb_cache_mib" mapstructure:"tcg_tb_cache_mib" comment:"Under TCG, size of QEMU's translation block cache in MiB (libvirt <tb-cache>); smaller saves host\nmemory per VM. 0 leaves QEMU's default (env VMPOD_TCG_TB_CACHE_MIB)."`
	// OVMFCode and OVMFVars are the UEFI firmware files for vmpod.dev/firmware: uefi.
	OVMFCode string `toml:"ovmf_code" mapstructure:"ovmf_code" comment:"UEFI firmware code file used for pods annotated vmpod.dev/firmware: uefi (Debian package ovmf)\n(env VMPOD_OVMF_CODE)."`
	// OVMFVars is the UEFI variable store template.
	OVMFVars string `toml:"ovmf_vars" mapstructure:"ovmf_vars" comment:"UEFI variable store template copied per VM (env VMPOD_OVMF_VARS)."`
	// SharedDirType is how host directories are shared into guests.
	SharedDirType string `toml:"shared_dir_type" mapstructure:"shared_dir_type" comment:"How host directories (hostPath, emptyDir, filesystem PVCs) are shared into guests: virtiofs (the default;\nneeds /usr/lib/qemu/virtiofsd, makes guest RAM shared memory, works with Debian's cloud kernel) or 9p\n(for guests whose kernel has no virtiofs; Debian's cloud kernel has no 9p). Read-only mounts are enforced\non the host with both (env VMPOD_SHARED_DIR_TYPE)."`
	// CNIConfDir holds the CNI network configs.
	CNIConfDir string `toml:"cni_conf_dir" mapstructure:"cni_conf_dir" comment:"Directory of CNI network configs. The first file by name (.conf, .conflist or .json) that parses\nis the pods' network, as the kubelet's runtimes do (env VMPOD_CNI_CONF_DIR)."`
	// CNIBinDirs are the directories searched for CNI plugins, colon-separated.
	CNIBinDirs string `toml:"cni_bin_dirs" mapstructure:"cni_bin_dirs" comment:"Colon-separated directories searched for CNI plugin binaries (env VMPOD_CNI_BIN_DIRS)."`
	// CNITimeout bounds each CNI ADD or DEL (the whole config list); 1s..1h, default 1m.
	CNITimeout Duration `toml:"cni_timeout" mapstructure:"cni_timeout" comment:"Deadline of each CNI ADD or DEL (the whole network config list), 1s to 1h. A plugin still running then\nis killed with its process group and RunPodSandbox or StopPodSandbox fails with Unavailable (env VMPOD_CNI_TIMEOUT)."`
	// CheckpointRestoreDirs are where checkpoint archives may be restored
	// from, colon-separated.
	CheckpointRestoreDirs string `toml:"checkpoint_restore_dirs" mapstructure:"checkpoint_restore_dirs" comment:"Colon-separated directories a container may be restored from: CreateContainer whose image is the\nabsolute path of a checkpoint archive restores it only when the file is in one of them. Keep them\nwritable by root only: an archive holds a guest's memory (env VMPOD_CHECKPOINT_RESTORE_DIRS)."`
	// DefaultRuntimeHandler is the handler used when a pod names none.
	DefaultRuntimeHandler string `toml:"default_runtime_handler" mapstructure:"default_runtime_handler" comment:"The [runtimes.<handler>] used for pods with no RuntimeClass handler (env VMPOD_DEFAULT_RUNTIME_HANDLER)."`
	// Runtimes are the RuntimeClass handlers vmpod serves.
	Runtimes map[string]Runtime `toml:"runtimes" mapstructure:"runtimes" comment:"RuntimeClass handlers served by vmpod. A pod's runtimeClassName selects a RuntimeClass whose handler\nmust be one of these; an unknown handler is refused. Empty values inherit the top-level setting."`
}

// Runtime is one RuntimeClass handler's settings.
type Runtime struct {
	// Accelerator overrides the top-level accelerator: kvm, tcg, auto or "" (inherit).
	Accelerator string `toml:"accelerator" mapstructure:"accelerator" comment:"kvm, tcg, auto, or empty to inherit the top-level accelerator."`
	// TCGTBCacheMiB overrides the top-level tcg_tb_cache_mib when > 0.
	TCGTBCacheMiB int `toml:"tcg_tb_cache_mib" mapstructure:"tcg_tb_cache_mib" comment:"Overrides the top-level tcg_tb_cache_mib when above 0."`
	// VMMemoryOverhead overrides the top-level vm_memory_overhead when > 0.
	VMMemoryOverhead ByteSize `toml:"vm_memory_overhead" mapstructure:"vm_memory_overhead" comment:"Overrides the top-level vm_memory_overhead when above 0."`
	// WarmStart turns warm start on for every pod of the handler.
	WarmStart bool `toml:"warm_start" mapstructure:"warm_start" comment:"Warm start for every pod of this handler, as the annotation vmpod.dev/warm-start: \"true\" does\n(docs/snapshots.md#warm-start)."`
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Socket:                 "/run/vmpod/vmpod.sock",
		StateDir:               "/var/lib/vmpod",
		LibvirtURI:             "qemu:///system",
		LibvirtCallTimeout:     Duration(30 * time.Second),
		AgentWaitTimeout:       Duration(time.Minute),
		CommandStartTimeout:    Duration(10 * time.Minute),
		CommandPoweroffTimeout: Duration(30 * time.Second),
		StreamIdleTimeout:      Duration(4 * time.Hour),
		CreateTimeout:          Duration(10 * time.Minute),
		ToolTimeout:            Duration(2 * time.Minute),
		LogLevel:               "info",
		LogFormat:              "text",
		ImageTranslationsDir:   "/etc/vmpod/images.d",
		CgroupDriver:           "cgroupfs",
		ShutdownTimeout:        Duration(30 * time.Second),
		PullProgressInterval:   Duration(5 * time.Second),
		StatsInterval:          Duration(time.Second),
		StatsMaxAge:            Duration(5 * time.Second),
		ImageCheckCPUSeconds:   30,
		ImageCheckMemoryMiB:    1024,
		RegistriesConf:         "/etc/containers/registries.conf",
		MaxImageSize:           64 << 30,
		PullRequestTimeout:     Duration(30 * time.Second),
		PullStallTimeout:       Duration(time.Minute),
		StreamingAddress:       "127.0.0.1:0",
		Accelerator:            "auto",
		DefaultMemoryMiB:       512,
		MaxVMMemory:            64 << 30,
		MaxVCPUs:               64,
		MaxRootVolumeSize:      512 << 30,
		TCGTBCacheMiB:          1024,
		VMMemoryOverhead:       64 << 20,
		OVMFCode:               "/usr/share/OVMF/OVMF_CODE_4M.fd",
		OVMFVars:               "/usr/share/OVMF/OVMF_VARS_4M.fd",
		SharedDirType:          "virtiofs",
		CNIConfDir:             "/etc/cni/net.d",
		CNIBinDirs:             "/opt/cni/bin:/usr/lib/cni",
		CNITimeout:             Duration(time.Minute),
		CheckpointRestoreDirs:  "/var/lib/kubelet/checkpoints",
		DefaultRuntimeHandler:  "vmpod",
		Runtimes:               map[string]Runtime{"vmpod": {}},
	}
}

// keys returns every configuration key in struct order.
func keys() []string {
	t := reflect.TypeOf(Config{})
	out := make([]string, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		if k := t.Field(i).Tag.Get("mapstructure"); k != "runtimes" {
			out = append(out, k)
		}
	}
	return out
}

// Load reads the configuration. Precedence, lowest first: Default(), the
// file, VMPOD_<KEY> environment variables, then the flags in flags that were
// actually set on the command line (a flag named "state-dir" sets key
// "state_dir"). path == "" means DefaultConfigFile, whose absence is not an
// error; an explicitly named file must exist. Unknown keys in the file are
// rejected so typos do not pass silently.
func Load(path string, flags *pflag.FlagSet) (Config, error) {
	v := viper.New()
	v.SetConfigType("toml")
	v.SetEnvPrefix("VMPOD")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	def := Default()
	defMap, err := toMap(def)
	if err != nil {
		return Config{}, err
	}
	for _, k := range keys() {
		v.SetDefault(k, defMap[k])
		if err := v.BindEnv(k); err != nil {
			return Config{}, err
		}
	}

	explicit := path != ""
	if !explicit {
		path = DefaultConfigFile
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return Config{}, fmt.Errorf("config file %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
		// No file: defaults, env and flags only.
	default:
		return Config{}, fmt.Errorf("read config file: %w", err)
	}

	if flags != nil {
		var bindErr error
		flags.VisitAll(func(f *pflag.Flag) {
			key := strings.ReplaceAll(f.Name, "-", "_")
			if _, ok := defMap[key]; ok && bindErr == nil {
				bindErr = v.BindPFlag(key, f)
			}
		})
		if bindErr != nil {
			return Config{}, bindErr
		}
	}

	var c Config
	err = v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.TextUnmarshallerHookFunc(),
		mapstructure.StringToTimeDurationHookFunc(),
	)))
	if err != nil {
		return Config{}, fmt.Errorf("config file %s: %v (run 'vmpod config default' for the valid keys): %w", path, err, errdefs.ErrInvalidArgument)
	}
	// viper drops empty tables such as a bare [runtimes.vmpod]; read the
	// handler tables straight from the file instead.
	c.Runtimes = def.Runtimes
	if len(data) > 0 {
		var rt struct {
			Runtimes map[string]Runtime `toml:"runtimes"`
		}
		if err := toml.Unmarshal(data, &rt); err != nil {
			return Config{}, fmt.Errorf("config file %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
		if rt.Runtimes != nil {
			c.Runtimes = rt.Runtimes
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// toMap converts c into the flat key -> value map viper wants as defaults,
// with durations as strings.
func toMap(c Config) (map[string]any, error) {
	out := map[string]any{}
	rv := reflect.ValueOf(c)
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		if rt.Field(i).Tag.Get("mapstructure") == "runtimes" {
			continue
		}
		val := rv.Field(i).Interface()
		if t, ok := val.(interface{ MarshalText() ([]byte, error) }); ok {
			b, err := t.MarshalText()
			if err != nil {
				return nil, err
			}
			val = string(b)
		}
		out[rt.Field(i).Tag.Get("mapstructure")] = val
	}
	return out, nil
}

// Handler is a resolved RuntimeClass handler: the per-handler settings with
// the top-level defaults filled in.
type Handler struct {
	Name          string
	Accelerator   string // kvm or tcg once ResolveAccelerators ran; else also auto
	TCGTBCacheMiB int
	// VMMemoryOverhead is vm_memory_overhead for this handler, in bytes.
	VMMemoryOverhead int64
	// WarmStart is the handler's warm_start.
	WarmStart bool
}

// MemoryOverhead is the memory a VM's QEMU may use beyond its guest RAM
// when its pod's RuntimeClass declares none: vm_memory_overhead, plus the
// translation cache under TCG (QEMU fills it as the guest runs new code).
func (h Handler) MemoryOverhead() int64 {
	if h.Accelerator == "tcg" {
		return h.VMMemoryOverhead + int64(h.TCGTBCacheMiB)<<20
	}
	return h.VMMemoryOverhead
}

// ResolveAccelerators returns c with every "auto" accelerator (the
// top-level one and each handler's) replaced by kvm when kvmUsable, else
// by tcg. The daemon calls it once at start-up, after probing /dev/kvm.
func (c Config) ResolveAccelerators(kvmUsable bool) Config {
	auto := "tcg"
	if kvmUsable {
		auto = "kvm"
	}
	if c.Accelerator == "auto" {
		c.Accelerator = auto
	}
	runtimes := make(map[string]Runtime, len(c.Runtimes))
	for name, r := range c.Runtimes {
		if r.Accelerator == "auto" {
			r.Accelerator = auto
		}
		runtimes[name] = r
	}
	c.Runtimes = runtimes
	return c
}

// ResolveHandler returns the settings for a RuntimeClass handler: "" means
// default_runtime_handler; an unknown handler is an InvalidArgument error
// listing the known ones.
func (c Config) ResolveHandler(name string) (Handler, error) {
	if name == "" {
		name = c.DefaultRuntimeHandler
	}
	r, ok := c.Runtimes[name]
	if !ok {
		return Handler{}, fmt.Errorf("runtime handler %q is not configured in vmpod (known: %s); fix the RuntimeClass handler or add [runtimes.%s] to the vmpod config: %w",
			name, strings.Join(slices.Sorted(maps.Keys(c.Runtimes)), ", "), name, errdefs.ErrInvalidArgument)
	}
	h := Handler{Name: name, Accelerator: c.Accelerator, TCGTBCacheMiB: c.TCGTBCacheMiB, VMMemoryOverhead: c.VMMemoryOverhead.Bytes(), WarmStart: r.WarmStart}
	if r.Accelerator != "" {
		h.Accelerator = r.Accelerator
	}
	if r.VMMemoryOverhead > 0 {
		h.VMMemoryOverhead = r.VMMemoryOverhead.Bytes()
	}
	if r.TCGTBCacheMiB > 0 {
		h.TCGTBCacheMiB = r.TCGTBCacheMiB
	}
	return h, nil
}

// DefaultTOML returns the complete default configuration as TOML with a
// comment above every key.
func DefaultTOML() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# vmpod configuration (default: /etc/vmpod/vmpod.toml).\n")
	buf.WriteString("# Every key can also be set as an environment variable VMPOD_<KEY> (upper case);\n")
	buf.WriteString("# command-line flags of 'vmpod serve' override both.\n\n")
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	if err := enc.Encode(Default()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CheckpointRestoreDirList returns checkpoint_restore_dirs split at
// colons, empty parts dropped.
func (c Config) CheckpointRestoreDirList() []string { return splitDirs(c.CheckpointRestoreDirs) }

// CNIBinDirList returns cni_bin_dirs split at colons, empty parts dropped.
func (c Config) CNIBinDirList() []string { return splitDirs(c.CNIBinDirs) }

func splitDirs(s string) []string {
	var out []string
	for _, d := range strings.Split(s, ":") {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}
