package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
)

// Validate checks every field and returns an InvalidArgument error naming the
// key and the accepted values.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config key %s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Socket == "" || !filepath.IsAbs(c.Socket) {
		bad("socket", "must be an absolute path, got %q", c.Socket)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "must be an absolute path, got %q", c.StateDir)
	}
	if c.LibvirtURI == "" {
		bad("libvirt_uri", "must not be empty (e.g. qemu:///system)")
	}
	if c.CreateTimeout < Duration(time.Second) {
		bad("create_timeout", "must be at least 1s, got %s", c.CreateTimeout.Std())
	}
	if c.ToolTimeout < Duration(time.Second) {
		bad("tool_timeout", "must be at least 1s, got %s", c.ToolTimeout.Std())
	}
	if c.StreamIdleTimeout < Duration(time.Second) {
		bad("stream_idle_timeout", "must be at least 1s, got %s", c.StreamIdleTimeout.Std())
	}
	if c.AgentWaitTimeout < 0 {
		bad("agent_wait_timeout", "must not be negative")
	}
	if c.CommandStartTimeout < Duration(time.Second) {
		bad("command_start_timeout", "must be at least 1s, got %s", c.CommandStartTimeout.Std())
	}
	if c.CommandPoweroffTimeout < 0 {
		bad("command_poweroff_timeout", "must not be negative (0 destroys the VM at once)")
	}
	if c.LibvirtCallTimeout < Duration(100*time.Millisecond) {
		bad("libvirt_call_timeout", "must be at least 100ms, got %s", c.LibvirtCallTimeout.Std())
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "must be text or json, got %q", c.LogFormat)
	}
	if c.ImageTranslationsDir == "" {
		bad("image_translations_dir", "must not be empty")
	}
	switch c.CgroupDriver {
	case "cgroupfs", "systemd":
	default:
		bad("cgroup_driver", "must be cgroupfs or systemd, got %q", c.CgroupDriver)
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "must not be negative")
	}
	if c.PullProgressInterval <= 0 {
		bad("pull_progress_interval", "must be positive")
	}
	if c.StatsInterval < Duration(10*time.Millisecond) || c.StatsInterval > Duration(time.Minute) {
		bad("stats_interval", "must be between 10ms and 1m, got %s", time.Duration(c.StatsInterval))
	}
	if c.StatsMaxAge < c.StatsInterval {
		bad("stats_max_age", "must be at least stats_interval (%s), got %s", time.Duration(c.StatsInterval), time.Duration(c.StatsMaxAge))
	}
	if c.ImageCheckCPUSeconds <= 0 {
		bad("image_check_cpu_seconds", "must be positive")
	}
	if c.ImageCheckMemoryMiB < 64 {
		bad("image_check_memory_mib", "must be at least 64")
	}
	if c.MaxImageSize < 1<<20 {
		bad("max_image_size", "must be at least 1Mi, got %d bytes", int64(c.MaxImageSize))
	}
	if c.PullRequestTimeout < Duration(time.Second) || c.PullStallTimeout < Duration(time.Second) {
		bad("pull_request_timeout and pull_stall_timeout", "must be at least 1s")
	}
	if _, _, err := net.SplitHostPort(c.StreamingAddress); err != nil {
		bad("streaming_address", "must be host:port, got %q", c.StreamingAddress)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			bad("metrics_address", "must be host:port (e.g. 127.0.0.1:9810) or empty, got %q", c.MetricsAddress)
		}
	}
	if !validAccel(c.Accelerator, false) {
		bad("accelerator", "must be kvm, tcg or auto, got %q", c.Accelerator)
	}
	if c.SharedDirType != "9p" && c.SharedDirType != "virtiofs" {
		bad("shared_dir_type", "must be 9p or virtiofs, got %q", c.SharedDirType)
	}
	if !filepath.IsAbs(c.CNIConfDir) {
		bad("cni_conf_dir", "must be an absolute path, got %q", c.CNIConfDir)
	}
	if len(c.CNIBinDirList()) == 0 {
		bad("cni_bin_dirs", "must name at least one absolute directory, got %q", c.CNIBinDirs)
	}
	for _, d := range c.CNIBinDirList() {
		if !filepath.IsAbs(d) {
			bad("cni_bin_dirs", "%q is not an absolute path", d)
		}
	}
	for _, d := range c.CheckpointRestoreDirList() {
		if !filepath.IsAbs(d) {
			bad("checkpoint_restore_dirs", "%q is not an absolute path", d)
		}
	}
	if c.CNITimeout < Duration(time.Second) || c.CNITimeout > Duration(time.Hour) {
		bad("cni_timeout", "must be between 1s and 1h, got %s", time.Duration(c.CNITimeout))
	}
	if c.DefaultMemoryMiB < 64 {
		bad("default_memory_mib", "must be at least 64")
	}
	if c.MaxVMMemory < 64<<20 {
		bad("max_vm_memory", "must be at least 64Mi, got %d bytes", c.MaxVMMemory)
	} else if int64(c.DefaultMemoryMiB)<<20 > c.MaxVMMemory.Bytes() {
		bad("default_memory_mib", "%d MiB is above max_vm_memory", c.DefaultMemoryMiB)
	}
	if c.MaxVCPUs < 1 || c.MaxVCPUs > 64 {
		bad("max_vcpus", "must be 1 to 64, got %d", c.MaxVCPUs)
	}
	if c.MaxRootVolumeSize < 1<<30 {
		bad("max_root_volume_size", "must be at least 1Gi, got %d bytes", c.MaxRootVolumeSize)
	}
	if c.TCGTBCacheMiB < 0 {
		bad("tcg_tb_cache_mib", "must not be negative")
	}
	checkOverhead := func(key string, v ByteSize, allowZero bool) {
		if (v != 0 || !allowZero) && (v < minVMMemoryOverhead || v > maxVMMemoryOverhead) {
			bad(key, "must be between 16Mi and 64Gi (QEMU alone needs more than 16Mi), got %d bytes", v)
		}
	}
	checkOverhead("vm_memory_overhead", c.VMMemoryOverhead, false)
	if len(c.Runtimes) == 0 {
		bad("runtimes", "at least one [runtimes.<handler>] table is needed")
	}
	if _, ok := c.Runtimes[c.DefaultRuntimeHandler]; !ok {
		bad("default_runtime_handler", "%q has no [runtimes.%s] table", c.DefaultRuntimeHandler, c.DefaultRuntimeHandler)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Runtimes)) {
		r := c.Runtimes[name]
		if name == "" {
			bad("runtimes", "a handler name must not be empty")
		}
		if !validAccel(r.Accelerator, true) {
			bad("runtimes."+name+".accelerator", "must be kvm, tcg, auto or empty, got %q", r.Accelerator)
		}
		if r.TCGTBCacheMiB < 0 {
			bad("runtimes."+name+".tcg_tb_cache_mib", "must not be negative")
		}
		checkOverhead("runtimes."+name+".vm_memory_overhead", r.VMMemoryOverhead, true)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %w: %w", errors.Join(errs...), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Bounds of vm_memory_overhead.
const (
	minVMMemoryOverhead = 16 << 20
	maxVMMemoryOverhead = 64 << 30
)

func validAccel(a string, allowEmpty bool) bool {
	switch a {
	case "kvm", "tcg", "auto":
		return true
	case "":
		return allowEmpty
	}
	return false
}
