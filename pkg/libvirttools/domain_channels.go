package libvirttools

import "libvirt.org/go/libvirtxml"

// GuestAgentChannel is the virtio-serial port name qemu-guest-agent
// listens on in the guest.
const GuestAgentChannel = "org.qemu.guest_agent.0"

func validateChannels(spec *DomainSpec, p *specProblems) {
	checkSocketPath(p, "guest agent socket", spec.GuestAgentSocket, false)
}

// configureChannels adds the qemu-guest-agent channel, a unix socket QEMU
// binds, when the spec asks for one.
func configureChannels(spec *DomainSpec, dom *libvirtxml.Domain) error {
	if spec.GuestAgentSocket == "" {
		return nil
	}
	dom.Devices.Channels = append(dom.Devices.Channels, libvirtxml.DomainChannel{
		Source: &libvirtxml.DomainChardevSource{
			UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: spec.GuestAgentSocket},
		},
		Target: &libvirtxml.DomainChannelTarget{
			VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: GuestAgentChannel},
		},
	})
	// libvirt would add the virtio-serial controller the channel needs by
	// itself; written out so the XML says what the guest gets.
	dom.Devices.Controllers = append(dom.Devices.Controllers, libvirtxml.DomainController{
		Type: "virtio-serial", Index: uintPtr(0),
	})
	return nil
}
