package libvirttools

import "libvirt.org/go/libvirtxml"

// memBalloonStatsPeriod is how often, in seconds, the guest's balloon
// driver reports memory statistics (for ContainerStats).
const memBalloonStatsPeriod = 10

// configureBaseDevices adds the devices every vmpod guest has: a virtio
// balloon (for guest memory statistics, not for resizing; none with
// spec.NoBalloon), a virtio RNG fed
// from the host's /dev/urandom (so early boot does not stall on entropy),
// and nothing graphical: no USB controller (hence no tablet), no
// <graphics>, video model none.
func configureBaseDevices(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.Devices.Controllers = append(dom.Devices.Controllers, libvirtxml.DomainController{
		Type: "usb", Index: uintPtr(0), Model: "none",
	})
	dom.Devices.Videos = append(dom.Devices.Videos, libvirtxml.DomainVideo{
		Model: libvirtxml.DomainVideoModel{Type: "none"},
	})
	dom.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{
		Model: "virtio",
		Stats: &libvirtxml.DomainMemBalloonStats{Period: memBalloonStatsPeriod},
	}
	if spec.NoBalloon {
		dom.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
	}
	dom.Devices.RNGs = append(dom.Devices.RNGs, libvirtxml.DomainRNG{
		Model:   "virtio",
		Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
	})
	return nil
}
