package libvirttools

import (
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// diskSerialChars are the characters libvirt's schema allows in a disk
// serial.
const diskSerialChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _.+-"

// allDisks returns the root disk followed by the extra disks.
func allDisks(spec *DomainSpec) []Disk {
	return append([]Disk{spec.RootDisk}, spec.ExtraDisks...)
}

// device returns d's device kind with the default applied.
func (d *Disk) device() string {
	if d.Device == "" {
		return DiskDeviceDisk
	}
	return d.Device
}

// bus returns d's bus with the default applied: virtio for disks, scsi for
// CD-ROMs (virtio-blk has no CD-ROM, and Debian's cloud kernel cannot see
// SATA ones).
func (d *Disk) bus() string {
	switch {
	case d.Bus != "":
		return d.Bus
	case d.device() == DiskDeviceCDROM:
		return DiskBusSCSI
	default:
		return DiskBusVirtio
	}
}

// bootOrders returns each disk's boot order, the root disk getting 1 when
// it has none.
func bootOrders(spec *DomainSpec) []int {
	disks := allDisks(spec)
	orders := make([]int, len(disks))
	for i, d := range disks {
		orders[i] = d.BootOrder
	}
	if orders[0] == 0 {
		orders[0] = 1
	}
	return orders
}

func validateDisks(spec *DomainSpec, p *specProblems) {
	seenBoot := map[int]bool{}
	orders := bootOrders(spec)
	for i, d := range allDisks(spec) {
		what := "root disk"
		if i > 0 {
			what = fmt.Sprintf("extra disk %d", i-1)
		}
		checkAbsPath(p, what, d.Path, true)
		if d.Format != DiskFormatQCOW2 && d.Format != DiskFormatRaw {
			p.addf("%s format %q is neither %q nor %q", what, d.Format, DiskFormatQCOW2, DiskFormatRaw)
		}
		switch d.device() {
		case DiskDeviceDisk, DiskDeviceCDROM:
		default:
			p.addf("%s device %q is neither %q nor %q", what, d.Device, DiskDeviceDisk, DiskDeviceCDROM)
		}
		switch d.bus() {
		case DiskBusVirtio:
			if d.device() == DiskDeviceCDROM {
				p.addf("%s is a cdrom on bus %q, which has none (use %q)", what, DiskBusVirtio, DiskBusSCSI)
			}
		case DiskBusSCSI, DiskBusSATA:
		default:
			p.addf("%s bus %q is not one of %q, %q, %q", what, d.Bus, DiskBusVirtio, DiskBusSCSI, DiskBusSATA)
		}
		if strings.Trim(d.Serial, diskSerialChars) != "" {
			p.addf("%s serial %q has characters other than letters, digits, space and _ . + -", what, d.Serial)
		}
		switch o := orders[i]; {
		case o < 0:
			p.addf("%s boot order %d is negative", what, o)
		case o > 0 && seenBoot[o]:
			p.addf("%s boot order %d is used twice", what, o)
		default:
			seenBoot[o] = true
		}
	}
}

// configureDisks attaches the root disk (first in the boot order unless
// told otherwise) and the extra disks, naming their targets per bus
// (vda, vdb, ... on virtio; sda, sdb, ... shared by scsi and sata, as in
// the guest), and adds the controllers their buses need.
func configureDisks(spec *DomainSpec, dom *libvirtxml.Domain) error {
	next := map[string]int{} // target prefix -> next index
	buses := map[string]bool{}
	orders := bootOrders(spec)
	for i, d := range allDisks(spec) {
		prefix := "sd"
		if d.bus() == DiskBusVirtio {
			prefix = "vd"
		}
		dev := prefix + diskLetters(next[prefix])
		next[prefix]++
		buses[d.bus()] = true

		disk := libvirtxml.DomainDisk{
			Device: d.device(),
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: d.Format},
			Source: &libvirtxml.DomainDiskSource{},
			Target: &libvirtxml.DomainDiskTarget{Dev: dev, Bus: d.bus()},
			Serial: d.Serial,
		}
		if d.Block {
			disk.Source.Block = &libvirtxml.DomainDiskSourceBlock{Dev: d.Path}
		} else {
			disk.Source.File = &libvirtxml.DomainDiskSourceFile{File: d.Path}
		}
		if d.ReadOnly || d.device() == DiskDeviceCDROM {
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		if orders[i] > 0 {
			disk.Boot = &libvirtxml.DomainDeviceBoot{Order: uint(orders[i])}
		}
		dom.Devices.Disks = append(dom.Devices.Disks, disk)
	}
	if buses[DiskBusSCSI] {
		dom.Devices.Controllers = append(dom.Devices.Controllers, libvirtxml.DomainController{
			Type: "scsi", Index: uintPtr(0), Model: "virtio-scsi",
		})
	}
	if buses[DiskBusSATA] {
		dom.Devices.Controllers = append(dom.Devices.Controllers, libvirtxml.DomainController{
			Type: "sata", Index: uintPtr(0),
		})
	}
	return nil
}

// diskLetters names the i-th disk of a bus the way libvirt and Linux do:
// a..z, aa..az, ba.., zz, aaa...
func diskLetters(i int) string {
	var b []byte
	for ; i >= 0; i = i/26 - 1 {
		b = append([]byte{byte('a' + i%26)}, b...)
	}
	return string(b)
}
