package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// The baseline boots vmpod's own domain definition straight through the
// libvirt API, without vmpod: the inactive XML of the first vmpod pod's
// domain, with its own name, overlay, sockets, serial log and a copy of
// the pod's cloud-init seed, and its NIC on a tap the benchmark makes on
// a bridge of its own (bridgeName: no address, nothing else on it).

// bridgeName is the bridge the baseline's taps are on; only this run has
// it, and the benchmark removes it.
func (b *bench) bridgeName() string { return "vbd" + b.tag }

// baseline is vmpod's domain definition and the paths in it that belong
// to the pod it was taken from.
type baseline struct {
	xml    string // inactive definition, as libvirt gives it back
	name   string
	dir    string // the container's directory (overlay, seed, serial log), with a trailing /
	runDir string // its sockets' directory, with a trailing /
	seed   string // the seed vmpod wrote
	nics   int
}

// captureBaseline takes the inactive definition of a vmpod domain (while it
// exists) and copies the pod's seed.
func (b *bench) captureBaseline(ctrID string) (*baseline, error) {
	ci, err := b.containerInfo(ctrID)
	if err != nil {
		return nil, fmt.Errorf("container status: %w", err)
	}
	d, err := b.lv.LookupDomainByName(ci.Domain)
	if err != nil {
		return nil, err
	}
	defer d.Free()
	xml, err := d.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
	if err != nil {
		return nil, err
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(xml); err != nil {
		return nil, err
	}
	bl := &baseline{xml: xml, name: ci.Domain, dir: filepath.Dir(ci.Disks["root"]) + "/", runDir: filepath.Dir(ci.SerialSocket) + "/"}
	if dom.Type != "qemu" {
		b.problem("vmpod's domain is of type %q, not qemu (TCG), although VMPOD_ACCELERATOR=tcg", dom.Type)
	}
	for _, d := range dom.Devices.Disks {
		if d.Source != nil && d.Source.File != nil && strings.HasSuffix(d.Source.File.File, ".iso") {
			bl.seed = d.Source.File.File
		}
	}
	bl.nics = len(dom.Devices.Interfaces)
	for what, p := range map[string]string{"root disk": ci.Disks["root"], "serial socket": ci.SerialSocket} {
		if p == "" || !strings.Contains(xml, p) {
			return nil, fmt.Errorf("the %s %q from ContainerStatus is not in the domain XML", what, p)
		}
	}
	if bl.nics != 1 {
		return nil, fmt.Errorf("vmpod's domain has %d NICs; the baseline makes one tap", bl.nics)
	}
	// The seed goes with the pod; each baseline boot gets a copy of it.
	if bl.seed != "" {
		data, err := os.ReadFile(bl.seed)
		if err != nil {
			return nil, fmt.Errorf("copy the seed: %w", err)
		}
		if err := os.WriteFile(filepath.Join(b.work, "baseline-seed.iso"), data, 0o644); err != nil {
			return nil, err
		}
	}
	return bl, nil
}

// forDomain rewrites the definition for a baseline domain: its own name,
// no UUID (libvirt makes one), no vmpod metadata (so no vmpod takes it for
// its own), its NIC on tap, and every file and socket of vmpod's pod moved
// to dir. variant, when not "", changes the devices (variants).
func (bl *baseline) forDomain(name, dir, tap, variant string) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(bl.xml); err != nil {
		return "", err
	}
	dom.Name, dom.UUID, dom.Metadata = name, "", nil
	for i := range dom.Devices.Interfaces {
		dom.Devices.Interfaces[i].Target.Dev = tap
	}
	if variant != "" {
		for _, v := range strings.Split(variant, "+") {
			if err := variants[v].apply(&dom); err != nil {
				return "", fmt.Errorf("variant %s: %w", v, err)
			}
		}
	}
	x, err := dom.Marshal()
	if err != nil {
		return "", err
	}
	x = strings.ReplaceAll(x, bl.dir, dir+"/")
	return strings.ReplaceAll(x, bl.runDir, dir+"/"), nil
}

// directRun is one boot of the baseline; durations are per step.
type directRun struct {
	tap     time.Duration // tap created, on the bridge, up
	qemuImg time.Duration // qemu-img create of the overlay
	define  time.Duration // virDomainDefineXML
	create  time.Duration // virDomainCreate (the domain runs when it returns)
	connect time.Duration // until the serial socket accepted us
	ready   time.Duration // from t0 to the ready line
	destroy time.Duration // destroy, undefine, tap removed
	err     error
}

// directBoot boots baseline domain n (of variant, "" for vmpod's own
// devices): tap, qemu-img create, define, create, read the serial socket
// until the ready line; then destroy, undefine and remove the tap.
func (b *bench) directBoot(bl *baseline, n int, variant string) directRun {
	var r directRun
	dir := filepath.Join(b.directDir, fmt.Sprint(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	name := fmt.Sprintf("vmpodbench-%s-%d", b.tag, n)
	tap := fmt.Sprintf("vbt%s%d", b.tag, n)
	xml, err := bl.forDomain(name, dir, tap, variant)
	if err != nil {
		r.err = err
		return r
	}
	os.WriteFile(filepath.Join(b.work, "baseline-domain"+variant+".xml"), []byte(xml), 0o644)
	if bl.seed != "" { // the seed is an input, as the guest image is: copied before the clock starts
		if out, err := exec.Command("cp", filepath.Join(b.work, "baseline-seed.iso"), filepath.Join(dir, filepath.Base(bl.seed))).CombinedOutput(); err != nil {
			r.err = fmt.Errorf("copy seed: %v: %s", err, out)
			return r
		}
	}
	deadline := time.Now().Add(b.opts.bootTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	t0 := time.Now()
	if err := b.makeTap(tap); err != nil {
		r.err = err
		return r
	}
	defer b.deleteTap(tap)
	r.tap = time.Since(t0)
	t := time.Now()
	// The same command vmpod runs (pkg/lifecycle/overlay.go).
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", b.imgPath, filepath.Join(dir, "root.qcow2")).CombinedOutput(); err != nil {
		r.err = fmt.Errorf("qemu-img create: %v: %s", err, out)
		return r
	}
	r.qemuImg = time.Since(t)
	t = time.Now()
	if alive, err := b.lv.IsAlive(); err != nil || !alive {
		// libvirtd was restarted (it is shared): a new connection.
		b.lv.Close()
		if b.lv, err = libvirt.NewConnect(b.opts.uri); err != nil {
			r.err = fmt.Errorf("reconnect to libvirt: %w", err)
			return r
		}
	}
	// Defined under mu, so the cleanup of an abort either sees the domain
	// or keeps it from being defined.
	b.mu.Lock()
	if b.aborted {
		b.mu.Unlock()
		r.err = errors.New("aborted")
		return r
	}
	d, err := b.lv.DomainDefineXML(xml)
	if err == nil {
		b.directDomains[name] = true
	}
	b.mu.Unlock()
	if err != nil {
		r.err = fmt.Errorf("define: %w", err)
		return r
	}
	defer d.Free()
	r.define = time.Since(t)
	t = time.Now()
	if err := d.Create(); err != nil {
		r.err = fmt.Errorf("create: %w", err)
		b.removeDirect(d, name)
		return r
	}
	r.create = time.Since(t)
	t = time.Now()
	conn, connected, ready, err := waitSerial(filepath.Join(dir, "serial.sock"), deadline)
	r.connect = connected.Sub(t)
	if err != nil {
		r.err = fmt.Errorf("%w; the serial log ends: %q", err, tail(filepath.Join(dir, "serial.log"), 300))
	} else {
		r.ready = ready.Sub(t0)
	}
	t = time.Now()
	if err := b.removeDirect(d, name); err != nil {
		b.problem("baseline %s: %v", name, err)
	}
	r.destroy = time.Since(t)
	if conn != nil {
		conn.Close()
	}
	return r
}

// removeDirect destroys and undefines a baseline domain.
func (b *bench) removeDirect(d *libvirt.Domain, name string) error {
	if err := d.Destroy(); err != nil {
		var le libvirt.Error
		if !errors.As(err, &le) || le.Code != libvirt.ERR_OPERATION_INVALID { // not running
			return err
		}
	}
	if err := d.Undefine(); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.directDomains, name)
	b.mu.Unlock()
	return nil
}

// makeBridge makes the baseline's bridge (no address: the guest's DHCP
// gets no answer, and its ready line does not wait for one).
func (b *bench) makeBridge() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.bridgeName()}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", b.bridgeName(), err)
	}
	b.bridgeMade = true
	return netlink.LinkSetUp(br)
}

// makeTap makes a tap as vmpod does (pkg/cni/taps.go), on the bridge, up.
func (b *bench) makeTap(name string) error {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	for _, f := range tap.Fds {
		f.Close()
	}
	br, err := netlink.LinkByName(b.bridgeName())
	if err == nil {
		err = netlink.LinkSetMaster(tap, br)
	}
	if err == nil {
		err = netlink.LinkSetUp(tap)
	}
	if err != nil {
		b.deleteTap(name)
		return fmt.Errorf("tap %s: %w", name, err)
	}
	return nil
}

func (b *bench) deleteTap(name string) {
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
}

// removeBridge removes the bridge and any tap of this run left on it.
func (b *bench) removeBridge() {
	if !b.bridgeMade {
		return
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "vbt"+b.tag) {
				netlink.LinkDel(l)
			}
		}
	}
	if l, err := netlink.LinkByName(b.bridgeName()); err == nil {
		netlink.LinkDel(l)
	}
}

// A variant boots the baseline with some devices changed, interleaved
// with the rest, to measure what a device costs the boot (-variants).
type variant struct {
	doc   string
	apply func(*libvirtxml.Domain) error
}

var variants = map[string]variant{
	"nic-rom": {"the NIC's option ROM on (libvirt's default)", func(d *libvirtxml.Domain) error {
		for i := range d.Devices.Interfaces {
			d.Devices.Interfaces[i].ROM = nil
		}
		return nil
	}},
	"seed-scsi": {"the seed as a CD-ROM on a virtio-scsi controller", func(d *libvirtxml.Domain) error {
		for i := range d.Devices.Disks {
			disk := &d.Devices.Disks[i]
			if disk.Source == nil || disk.Source.File == nil || !strings.HasSuffix(disk.Source.File.File, ".iso") {
				continue
			}
			disk.Device, disk.Address, disk.Serial = "cdrom", nil, ""
			disk.Target = &libvirtxml.DomainDiskTarget{Dev: "sda", Bus: "scsi"}
			for _, c := range d.Devices.Controllers {
				if c.Type == "scsi" {
					return nil
				}
			}
			zero := uint(0)
			d.Devices.Controllers = append(d.Devices.Controllers, libvirtxml.DomainController{Type: "scsi", Index: &zero, Model: "virtio-scsi"})
			return nil
		}
		return errors.New("no seed disk")
	}},
	"no-nic-rom": {"the NIC's option ROM off", func(d *libvirtxml.Domain) error {
		for i := range d.Devices.Interfaces {
			d.Devices.Interfaces[i].ROM = &libvirtxml.DomainROM{Enabled: "no"}
		}
		return nil
	}},
	"seed-virtio": {"the seed as a read-only virtio disk, no SCSI controller", func(d *libvirtxml.Domain) error {
		virtio, scsi := 0, 0
		for _, disk := range d.Devices.Disks {
			if disk.Target != nil && disk.Target.Bus == "virtio" {
				virtio++
			}
			if disk.Target != nil && disk.Target.Bus == "scsi" {
				scsi++
			}
		}
		for i := range d.Devices.Disks {
			disk := &d.Devices.Disks[i]
			if disk.Source == nil || disk.Source.File == nil || !strings.HasSuffix(disk.Source.File.File, ".iso") {
				continue
			}
			if disk.Target.Bus == "virtio" {
				return nil
			}
			disk.Device, disk.Address = "disk", nil
			disk.Target = &libvirtxml.DomainDiskTarget{Dev: "vd" + string(rune('a'+virtio)), Bus: "virtio"}
			if scsi == 1 { // the seed was the only SCSI device
				var cs []libvirtxml.DomainController
				for _, c := range d.Devices.Controllers {
					if c.Type != "scsi" {
						cs = append(cs, c)
					}
				}
				d.Devices.Controllers = cs
			}
			return nil
		}
		return errors.New("no seed disk")
	}},
	"balloon": {"a virtio balloon with stats every 10 s", func(d *libvirtxml.Domain) error {
		d.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "virtio", Stats: &libvirtxml.DomainMemBalloonStats{Period: 10}}
		return nil
	}},
	"no-balloon": {"no balloon", func(d *libvirtxml.Domain) error {
		d.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
		return nil
	}},
}

// variantDoc describes variant, which may join several with "+".
func variantDoc(variant string) string {
	var d []string
	for _, v := range strings.Split(variant, "+") {
		d = append(d, variants[v].doc)
	}
	return strings.Join(d, " and ")
}

// variantNames lists the variants for the flag's help.
func variantNames() string {
	var s []string
	for n, v := range variants {
		s = append(s, n+" ("+v.doc+")")
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}
