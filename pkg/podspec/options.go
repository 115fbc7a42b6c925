// Package podspec parses what a pod says about its VM, once: every
// vmpod.dev/* annotation and the kubelet's bandwidth annotations become one
// typed Options value (VM shape requests, cloud-init input, network
// options), stored with the sandbox record by RunPodSandbox. It also
// resolves a container's VM Shape from the options, the container's Linux
// resources and the runtime handler, and holds the one CPU-limit-to-vCPU
// rule. Nothing here does I/O.
//
// A new annotation goes here: a constant, a field of Options, its parsing
// in parse, and a line in docs/vm-pods.md (or docs/cloud-init.md).
package podspec

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/libvirttools"
)

// Pod annotations vmpod reads. The kubelet passes the pod's annotations in
// the PodSandboxConfig; container-level annotations of the same name
// (crictl can set them) win for that container. Their names are user
// interface: keep them stable.
const (
	AnnVCPUs          = "vmpod.dev/vcpus"
	AnnMemory         = "vmpod.dev/memory"
	AnnRootVolumeSize = "vmpod.dev/root-volume-size"
	AnnDiskBus        = "vmpod.dev/disk-bus"
	AnnCPUModel       = "vmpod.dev/cpu-model"
	AnnFirmware       = "vmpod.dev/firmware"
	// AnnWarmStart ("true"/"false") and AnnWarmStartMarker (a regexp of a
	// console line that says the guest is ready) choose warm start
	// (docs/snapshots.md#warm-start).
	AnnWarmStart       = "vmpod.dev/warm-start"
	AnnWarmStartMarker = "vmpod.dev/warm-start-marker"

	// AnnUserData is the whole cloud-init user-data: a "#cloud-config"
	// document, a "#!" script, or a MIME multipart message.
	AnnUserData = "vmpod.dev/cloud-init-user-data"
	// AnnMetaData is a YAML map merged over the generated meta-data.
	AnnMetaData = "vmpod.dev/cloud-init-meta-data"
	// AnnNetworkConfig replaces the generated network configuration.
	AnnNetworkConfig = "vmpod.dev/cloud-init-network-config"
	// AnnSSHAuthorizedKeys holds newline-separated SSH public keys.
	AnnSSHAuthorizedKeys = "vmpod.dev/ssh-authorized-keys"
	// AnnDatasource selects the seed layout: nocloud (default) or configdrive.
	AnnDatasource = "vmpod.dev/cloud-init-datasource"

	// AnnIngressBandwidth and AnnEgressBandwidth are the kubelet's
	// bandwidth annotations, passed to the CNI bandwidth plugin.
	AnnIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	AnnEgressBandwidth  = "kubernetes.io/egress-bandwidth"
)

// annPrefix starts every annotation vmpod owns; an unknown one with this
// prefix is refused, so a typo does not pass silently.
const annPrefix = "vmpod.dev/"

// known are the vmpod.dev/* annotations, in the order error messages list
// them.
var known = []string{
	AnnVCPUs, AnnMemory, AnnRootVolumeSize, AnnDiskBus, AnnCPUModel, AnnFirmware,
	AnnUserData, AnnMetaData, AnnNetworkConfig, AnnSSHAuthorizedKeys, AnnDatasource,
	AnnWarmStart, AnnWarmStartMarker,
}

// MaxWarmStartMarker bounds the marker regexp.
const MaxWarmStartMarker = 256

// The bandwidth annotations' bounds, as containerd and CRI-O check them
// (Kubernetes' pkg/util/bandwidth): beyond them a quantity is refused, never
// wrapped or read as no limit.
var minBandwidth, maxBandwidth = resource.MustParse("1k"), resource.MustParse("1P")

// MaxVCPUs is the most vCPUs a VM gets.
const MaxVCPUs = 64

var cpuModelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Options is everything a pod's annotations say, validated. The zero value
// of a field means "not set". It is stored with the sandbox record (JSON).
type Options struct {
	VM        VMOptions        `json:"vm"`
	WarmStart WarmStartOptions `json:"warm_start,omitempty"`
	CloudInit CloudInitOptions `json:"cloud_init"`
	Network   NetworkOptions   `json:"network"`
}

// VMOptions are the VM shape annotations.
type VMOptions struct {
	VCPUs          int    `json:"vcpus,omitempty"`
	MemoryBytes    int64  `json:"memory_bytes,omitempty"`
	RootVolumeSize int64  `json:"root_volume_size,omitempty"`
	DiskBus        string `json:"disk_bus,omitempty"`  // "" is virtio
	CPUModel       string `json:"cpu_model,omitempty"` // "" leaves the default
	Firmware       string `json:"firmware,omitempty"`  // "" is bios
}

// WarmStartOptions are the warm start annotations. Enabled is nil when
// the pod does not say (the handler's warm_start then decides).
type WarmStartOptions struct {
	Enabled *bool  `json:"enabled,omitempty"`
	Marker  string `json:"marker,omitempty"`
}

// CloudInitOptions are the cloud-init annotations, checked by pkg/cloudinit.
type CloudInitOptions struct {
	Datasource    string         `json:"datasource,omitempty"` // "" is nocloud
	UserData      string         `json:"user_data,omitempty"`
	MetaData      map[string]any `json:"meta_data,omitempty"`
	NetworkConfig string         `json:"network_config,omitempty"`
	SSHKeys       []string       `json:"ssh_keys,omitempty"`
}

// NetworkOptions are the bandwidth limits in bits per second (0: none).
type NetworkOptions struct {
	IngressRate uint64 `json:"ingress_rate,omitempty"`
	EgressRate  uint64 `json:"egress_rate,omitempty"`
}

// DiskBusOrDefault is the root disk's bus.
func (v VMOptions) DiskBusOrDefault() string {
	if v.DiskBus == "" {
		return libvirttools.DiskBusVirtio
	}
	return v.DiskBus
}

// FirmwareOrDefault is the VM's firmware.
func (v VMOptions) FirmwareOrDefault() string {
	if v.Firmware == "" {
		return libvirttools.FirmwareBIOS
	}
	return v.Firmware
}

// Parse validates a pod's annotations and returns its options. Every
// problem is reported at once, each naming the annotation and what it
// accepts; the error wraps errdefs.ErrInvalidArgument.
func Parse(ann map[string]string) (Options, error) {
	return Options{}.Merge(ann)
}

// Merge returns o with the annotations in ann (a container's) parsed over
// it: what ann sets wins, the rest stays.
func (o Options) Merge(ann map[string]string) (Options, error) {
	out := o.clone()
	var errs []error
	bad := func(key, val, accepted string) {
		errs = append(errs, fmt.Errorf("annotation %s=%q is invalid: accepted values are %s", key, val, accepted))
	}
	wrap := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", key, err))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ann)) {
		if strings.HasPrefix(k, annPrefix) && !slices.Contains(known, k) {
			errs = append(errs, fmt.Errorf("annotation %s is not one vmpod knows (a typo?); known: %s", k, strings.Join(known, ", ")))
		}
	}
	vm := &out.VM
	if v, ok := ann[AnnVCPUs]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxVCPUs {
			bad(AnnVCPUs, v, fmt.Sprintf("an integer from 1 to %d", MaxVCPUs))
		}
		vm.VCPUs = n
	}
	if v, ok := ann[AnnMemory]; ok {
		n, ok := bytesOf(v)
		if !ok || n < libvirttools.MinMemoryBytes {
			bad(AnnMemory, v, "a quantity of at least 64Mi (e.g. 512Mi, 2Gi)")
		}
		vm.MemoryBytes = n
	}
	if v, ok := ann[AnnRootVolumeSize]; ok {
		n, ok := bytesOf(v)
		if !ok || n <= 0 {
			bad(AnnRootVolumeSize, v, "a positive quantity no smaller than the image's virtual size (e.g. 10Gi)")
		}
		vm.RootVolumeSize = n
	}
	if v, ok := ann[AnnDiskBus]; ok {
		switch v {
		case libvirttools.DiskBusVirtio, libvirttools.DiskBusSCSI, libvirttools.DiskBusSATA:
			vm.DiskBus = v
		default:
			bad(AnnDiskBus, v, "virtio, scsi or sata")
		}
	}
	if v, ok := ann[AnnCPUModel]; ok {
		if v != libvirttools.CPUModeHostModel && v != libvirttools.CPUModeHostPassthrough && !cpuModelRE.MatchString(v) {
			bad(AnnCPUModel, v, "host-model, host-passthrough or a libvirt CPU model name (virsh cpu-models x86_64)")
		}
		vm.CPUModel = v
	}
	if v, ok := ann[AnnFirmware]; ok {
		switch v {
		case libvirttools.FirmwareBIOS, libvirttools.FirmwareUEFI:
			vm.Firmware = v
		default:
			bad(AnnFirmware, v, "bios or uefi")
		}
	}
	if v, ok := ann[AnnWarmStart]; ok {
		switch v {
		case "true", "false":
			on := v == "true"
			out.WarmStart.Enabled = &on
		default:
			bad(AnnWarmStart, v, "true or false")
		}
	}
	if v, ok := ann[AnnWarmStartMarker]; ok {
		if _, err := regexp.Compile(v); err != nil || v == "" || len(v) > MaxWarmStartMarker {
			bad(AnnWarmStartMarker, v, fmt.Sprintf("a regular expression (Go syntax) of 1 to %d bytes matching the console line that says the guest is ready", MaxWarmStartMarker))
		}
		out.WarmStart.Marker = v
	}
	ci := &out.CloudInit
	if v, ok := ann[AnnDatasource]; ok {
		ds, err := cloudinit.ParseDatasource(v)
		if err != nil {
			bad(AnnDatasource, v, cloudinit.DatasourceNoCloud+", "+cloudinit.DatasourceConfigDrive)
		}
		ci.Datasource = ds
	}
	if v, ok := ann[AnnUserData]; ok {
		wrap(AnnUserData, cloudinit.CheckUserData(v))
		ci.UserData = v
	}
	if v, ok := ann[AnnMetaData]; ok {
		m, err := cloudinit.ParseMetaData(v)
		wrap(AnnMetaData, err)
		ci.MetaData = m
	}
	if v, ok := ann[AnnSSHAuthorizedKeys]; ok {
		keys, err := cloudinit.ParseSSHKeys(v)
		wrap(AnnSSHAuthorizedKeys, err)
		ci.SSHKeys = keys
	}
	if v, ok := ann[AnnNetworkConfig]; ok {
		ci.NetworkConfig = v
	}
	if _, ok := ann[AnnNetworkConfig]; ok || ci.NetworkConfig != "" {
		// Checked against the datasource in effect, which either map may set.
		if ds, err := cloudinit.ParseDatasource(ci.Datasource); err == nil {
			wrap(AnnNetworkConfig, cloudinit.CheckNetworkConfig(ds, ci.NetworkConfig))
		}
	}
	for _, bw := range []struct {
		key  string
		rate *uint64
	}{{AnnIngressBandwidth, &out.Network.IngressRate}, {AnnEgressBandwidth, &out.Network.EgressRate}} {
		key, rate := bw.key, bw.rate
		v, ok := ann[key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Cmp(minBandwidth) < 0 || q.Cmp(maxBandwidth) > 0 {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not a quantity of bits per second from 1k to 1P (e.g. 10M)", key, v))
			continue
		}
		*rate = uint64(q.Value())
	}
	if len(errs) > 0 {
		return Options{}, fmt.Errorf("%w: %w", errors.Join(errs...), errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// bytesOf parses a quantity of bytes; ok is false for a malformed one or
// one beyond what int64 holds (no wrapping: "16Ei" is refused, never read
// as something small).
func bytesOf(v string) (int64, bool) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, false
	}
	n, ok := q.AsInt64()
	if !ok && q.Sign() > 0 {
		// A fractional or huge value: refuse what int64 cannot hold.
		if q.Cmp(*resource.NewQuantity(1<<62, resource.BinarySI)) > 0 {
			return 0, false
		}
		n, ok = q.Value(), true
	}
	return n, ok
}

// Limits bound what a pod may ask for: the config keys max_vm_memory,
// max_vcpus and max_root_volume_size.
type Limits struct {
	MaxMemoryBytes     int64
	MaxVCPUs           int
	MaxRootVolumeBytes int64
}

// LimitsOf returns the limits a configuration sets.
func LimitsOf(c config.Config) Limits {
	return Limits{MaxMemoryBytes: c.MaxVMMemory.Bytes(), MaxVCPUs: c.MaxVCPUs, MaxRootVolumeBytes: c.MaxRootVolumeSize.Bytes()}
}

// Check refuses options above the limits, naming each annotation and the
// config key that bounds it; the error wraps errdefs.ErrInvalidArgument.
func (o Options) Check(l Limits) error {
	var errs []error
	if l.MaxMemoryBytes > 0 && o.VM.MemoryBytes > l.MaxMemoryBytes {
		errs = append(errs, fmt.Errorf("annotation %s=%d bytes is above the %d bytes this node allows (config key max_vm_memory)", AnnMemory, o.VM.MemoryBytes, l.MaxMemoryBytes))
	}
	if l.MaxVCPUs > 0 && o.VM.VCPUs > l.MaxVCPUs {
		errs = append(errs, fmt.Errorf("annotation %s=%d is above the %d vCPUs this node allows (config key max_vcpus)", AnnVCPUs, o.VM.VCPUs, l.MaxVCPUs))
	}
	if l.MaxRootVolumeBytes > 0 && o.VM.RootVolumeSize > l.MaxRootVolumeBytes {
		errs = append(errs, fmt.Errorf("annotation %s=%d bytes is above the %d bytes this node allows (config key max_root_volume_size)", AnnRootVolumeSize, o.VM.RootVolumeSize, l.MaxRootVolumeBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errors.Join(errs...), errdefs.ErrInvalidArgument)
	}
	return nil
}

// clone copies o so that a Merge never changes the options it started from.
func (o Options) clone() Options {
	c := o
	c.CloudInit.MetaData = maps.Clone(o.CloudInit.MetaData)
	c.CloudInit.SSHKeys = slices.Clone(o.CloudInit.SSHKeys)
	if o.WarmStart.Enabled != nil {
		on := *o.WarmStart.Enabled
		c.WarmStart.Enabled = &on
	}
	return c
}
