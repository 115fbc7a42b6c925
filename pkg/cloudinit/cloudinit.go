// Package cloudinit builds the cloud-init seed of a vmpod VM — the NoCloud
// (volume label "cidata") or ConfigDrive (label "config-2") files — from
// typed input (identity, the user's user-data, meta-data, network config
// and SSH keys, the container's env, command, files, shares and devices,
// the pod's network), and writes it as an ISO 9660 image that is attached
// to the VM read-only. It does not know where the input came from (pod
// annotations are parsed in pkg/podspec); the checks of user-given parts
// (CheckUserData, ParseMetaData, ...) are exported for that parser.
//
// Build is pure: no clock, no randomness, no I/O, sorted maps, so the same
// Input always gives the same Seed (golden files under testdata/). It logs
// nothing: seeds carry secrets (files, environment, keys).
//
// # User-data
//
// vmpod adds its own cloud-config ("additions"): ssh_authorized_keys
// (NoCloud; ConfigDrive puts the keys in meta_data.json public_keys),
// write_files (/etc/environment with the container's env, appended to the
// guest's file, and the caller's Files), bootcmd (mount points of shares,
// /dev/disk/by-id symlinks of devices; bootcmd runs on every boot, which
// /dev needs), mounts (shares), runcmd (a check that each share is
// mounted) and, when the pod's DNS config has options, resolv_conf. The
// container's command is not in the seed: vmpod runs it through the guest
// agent (pkg/guest).
//
// The user's user-data (Input.UserData) is the whole user-data:
//   - a "#cloud-config" document: vmpod's lists are appended to the user's
//     lists of the same key (the user's entries first); the user's other keys
//     are kept, and a user's manage_resolv_conf/resolv_conf wins over vmpod's.
//   - a "#!" script or a MIME multipart message: when vmpod has additions,
//     the user-data becomes a multipart/mixed message with the user's script
//     (or the user's multipart, nested whole) first and a text/cloud-config
//     part with vmpod's additions last. That part carries
//     merge_how list(append)+dict(no_replace,recurse_list), so cloud-init
//     appends vmpod's lists to lists of the user's cloud-config parts instead
//     of replacing them (cloud-init's default for later parts).
//
// User-data larger than MaxUserDataBytes after merging is refused.
package cloudinit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// Input is what a seed is built from; the pod lifecycle fills it from the
// pod's parsed options and the container's config.
type Input struct {
	// Datasource is DatasourceNoCloud or DatasourceConfigDrive; "" is
	// NoCloud.
	Datasource string
	// InstanceID is stable per pod (derived from the pod UID): cloud-init runs
	// its per-instance modules again only when it changes.
	InstanceID string
	// Hostname is the pod's hostname (meta-data local-hostname).
	Hostname string
	// UserData is the user's user-data ("" for none): a #cloud-config
	// document, a "#!" script or a MIME multipart message (CheckUserData).
	UserData string
	// MetaData is the user's meta-data (ParseMetaData), merged over the
	// generated meta-data: its top-level keys win.
	MetaData map[string]any
	// NetworkConfig, when not "", replaces the generated network
	// configuration: YAML (network config v1/v2) for NoCloud,
	// network_data.json for ConfigDrive.
	NetworkConfig string
	// SSHKeys are authorized keys for the guest (ParseSSHKeys).
	SSHKeys []string
	// Env is the container's environment, written to /etc/environment.
	Env [][2]string
	// Files are written into the guest (write_files).
	Files []File
	// Shares are host directories shared into the guest and mounted (mounts).
	Shares []Share
	// Devices are block devices to link under a path in the guest.
	Devices []Device
	// NICs are the VM's network interfaces; none means DHCP on every
	// ethernet interface.
	NICs []NIC
	// DNS is the pod's DNS config; nil for none.
	DNS *DNS
}

// File is a file written into the guest by cloud-init's write_files.
type File struct {
	// Path is the absolute path in the guest.
	Path string
	// Content is written as is (base64 in the seed).
	Content []byte
	// Mode holds the permission bits (plus setuid/setgid/sticky); 0 means 0644.
	Mode os.FileMode
}

// Share is a host directory exported to the guest and mounted there.
type Share struct {
	// Tag is the virtiofs/9p mount tag of the libvirt <filesystem>.
	Tag string
	// MountPath is the absolute mount point in the guest, created if needed.
	MountPath string
	// ReadOnly mounts the share read-only.
	ReadOnly bool
	// Type is "virtiofs" or "9p".
	Type string
}

// Device is a virtio disk that the guest sees as /dev/disk/by-id/virtio-<Serial>
// and links to Path.
type Device struct {
	// Serial is the disk's serial (at most 20 characters: virtio-blk's limit).
	Serial string
	// Path is the absolute path of the symlink in the guest.
	Path string
}

// NIC is a network interface of the VM.
type NIC struct {
	// Name, when set, is the interface's name in the guest (it is renamed).
	Name string
	// MAC identifies the interface, e.g. "52:54:00:12:34:56".
	MAC string
	// Addresses are static addresses with their prefix length; none means DHCPv4.
	Addresses []netip.Prefix
	// Gateway4 and Gateway6 are the default gateways; the zero Addr for none.
	Gateway4, Gateway6 netip.Addr
	// Routes are further static routes.
	Routes []Route
	// MTU is the interface MTU; 0 leaves the default.
	MTU int
}

// Route is a static route.
type Route struct {
	// To is the destination network.
	To netip.Prefix
	// Via is the next hop.
	Via netip.Addr
	// Metric is the route metric; 0 leaves the default.
	Metric int
}

// DNS is the pod's resolver configuration (CRI DNSConfig).
type DNS struct {
	// Servers are name server addresses.
	Servers []string
	// Searches are search domains.
	Searches []string
	// Options are resolv.conf options such as "ndots:5".
	Options []string
}

// Seed is a built cloud-init seed.
type Seed struct {
	// Label is the ISO volume label: "cidata" or "config-2".
	Label string
	// Files maps a path inside the ISO ("meta-data",
	// "openstack/latest/user_data") to its content.
	Files map[string][]byte
}

// Volume labels and file names of the two layouts.
const (
	LabelNoCloud     = "cidata"
	LabelConfigDrive = "config-2"

	noCloudMetaData      = "meta-data"
	noCloudUserData      = "user-data"
	noCloudNetworkConfig = "network-config"

	configDriveMetaData    = "openstack/latest/meta_data.json"
	configDriveUserData    = "openstack/latest/user_data"
	configDriveNetworkData = "openstack/latest/network_data.json"
)

// Build builds the seed for in. Errors wrap errdefs.ErrInvalidArgument and
// list every problem found.
func Build(in Input) (Seed, error) {
	ds, err := ParseDatasource(in.Datasource)
	if err != nil {
		return Seed{}, invalid([]string{err.Error()})
	}
	problems := checkInput(in)
	if in.UserData != "" {
		if err := CheckUserData(in.UserData); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if in.NetworkConfig != "" {
		if err := CheckNetworkConfig(ds, in.NetworkConfig); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return Seed{}, invalid(problems)
	}
	keys, userMeta := in.SSHKeys, in.MetaData

	add := additions(in, ds, keys)
	userData, err := buildUserData(in.UserData, add)
	if err != nil {
		return Seed{}, invalid([]string{err.Error()})
	}
	// The limit is on the user's user-data with vmpod's additions merged,
	// not counting the caller's Files (ConfigMaps and Secrets, each of which
	// Kubernetes already limits to 1 MiB), which travel in write_files too.
	size := len(userData)
	if len(in.Files) > 0 {
		noFiles := in
		noFiles.Files = nil
		ud, err := buildUserData(in.UserData, additions(noFiles, ds, keys))
		if err != nil {
			return Seed{}, invalid([]string{err.Error()})
		}
		size = len(ud)
	}
	if size > MaxUserDataBytes {
		return Seed{}, invalid([]string{fmt.Sprintf("user-data is %d bytes with vmpod's additions merged, more than the %d bytes (64 KiB) allowed", size, MaxUserDataBytes)})
	}

	seed := Seed{Files: map[string][]byte{}}
	netOverride, hasNetOverride := in.NetworkConfig, in.NetworkConfig != ""
	switch ds {
	case DatasourceNoCloud:
		seed.Label = LabelNoCloud
		meta := map[string]any{"instance-id": in.InstanceID, "local-hostname": in.Hostname}
		for k, v := range userMeta {
			meta[k] = v
		}
		b, err := toYAML(meta)
		if err != nil {
			return Seed{}, fmt.Errorf("encode meta-data: %w", err)
		}
		seed.Files[noCloudMetaData] = b
		seed.Files[noCloudUserData] = userData
		if hasNetOverride {
			seed.Files[noCloudNetworkConfig] = []byte(netOverride)
		} else {
			b, err := networkConfigV2(in.NICs, in.DNS)
			if err != nil {
				return Seed{}, fmt.Errorf("encode network-config: %w", err)
			}
			seed.Files[noCloudNetworkConfig] = b
		}
	case DatasourceConfigDrive:
		seed.Label = LabelConfigDrive
		meta := map[string]any{"uuid": in.InstanceID, "hostname": in.Hostname, "name": in.Hostname}
		if len(keys) > 0 {
			pk := map[string]any{}
			for i, k := range keys {
				pk[fmt.Sprintf("key-%d", i)] = k
			}
			meta["public_keys"] = pk
		}
		for k, v := range userMeta {
			meta[k] = v
		}
		b, err := toJSON(meta)
		if err != nil {
			return Seed{}, fmt.Errorf("encode meta_data.json: %w", err)
		}
		seed.Files[configDriveMetaData] = b
		seed.Files[configDriveUserData] = userData
		switch {
		case hasNetOverride:
			seed.Files[configDriveNetworkData] = []byte(netOverride)
		case len(in.NICs) > 0:
			b, err := networkData(in.NICs, in.DNS)
			if err != nil {
				return Seed{}, fmt.Errorf("encode network_data.json: %w", err)
			}
			seed.Files[configDriveNetworkData] = b
		default:
			// network_data.json names links by MAC and cannot say "every
			// ethernet interface"; without it cloud-init's ConfigDrive
			// datasource falls back to DHCP on the first NIC.
		}
	}
	return seed, nil
}

// checkInput validates the caller-supplied parts that end up in the guest.
func checkInput(in Input) []string {
	var p []string
	if in.InstanceID == "" {
		p = append(p, "instance ID is empty")
	}
	for _, kv := range in.Env {
		if kv[0] == "" || strings.ContainsAny(kv[0], "= \t\n\r\"'\\$`\x00") {
			p = append(p, fmt.Sprintf("environment variable name %q cannot be written to /etc/environment", kv[0]))
		}
		if strings.ContainsAny(kv[1], "\n\r\x00") {
			p = append(p, fmt.Sprintf("environment variable %s: a value with a newline or NUL cannot be written to /etc/environment (one line per variable)", kv[0]))
		}
	}
	for _, f := range in.Files {
		if !strings.HasPrefix(f.Path, "/") {
			p = append(p, fmt.Sprintf("file path %q is not absolute", f.Path))
		}
	}
	for _, s := range in.Shares {
		if s.Type != "virtiofs" && s.Type != "9p" {
			p = append(p, fmt.Sprintf("share %q: type %q is invalid: accepted values are virtiofs, 9p", s.Tag, s.Type))
		}
		if s.Tag == "" || !strings.HasPrefix(s.MountPath, "/") {
			p = append(p, fmt.Sprintf("share %q: needs a tag and an absolute mount path (got %q)", s.Tag, s.MountPath))
		}
	}
	for _, d := range in.Devices {
		if d.Serial == "" || len(d.Serial) > 20 || strings.ContainsAny(d.Serial, "/ \t\n") {
			p = append(p, fmt.Sprintf("device serial %q is invalid: 1 to 20 characters without / or blanks", d.Serial))
		}
		if !strings.HasPrefix(d.Path, "/") {
			p = append(p, fmt.Sprintf("device %q: path %q is not absolute", d.Serial, d.Path))
		}
	}
	for i, n := range in.NICs {
		if _, err := parseMAC(n.MAC); err != nil {
			p = append(p, fmt.Sprintf("NIC %d: MAC %q is invalid", i, n.MAC))
		}
		if n.Gateway4.IsValid() && !n.Gateway4.Is4() {
			p = append(p, fmt.Sprintf("NIC %d: gateway4 %s is not IPv4", i, n.Gateway4))
		}
		if n.Gateway6.IsValid() && !n.Gateway6.Is6() {
			p = append(p, fmt.Sprintf("NIC %d: gateway6 %s is not IPv6", i, n.Gateway6))
		}
	}
	if in.DNS != nil {
		for _, s := range in.DNS.Servers {
			if _, err := netip.ParseAddr(s); err != nil {
				p = append(p, fmt.Sprintf("DNS server %q is not an IP address", s))
			}
		}
	}
	return p
}

// toJSON encodes v as indented JSON with sorted keys and a final newline.
func toJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// toYAML encodes a JSON-compatible value as YAML with sorted keys.
func toYAML(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(b)
}
