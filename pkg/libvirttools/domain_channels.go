package libvirttools

import (
	"fmt"

	"libvirt.org/go/libvirtxml"
)

// GuestAgentChannel is the virtio-serial port name qemu-guest-agent
// listens on in the guest.
const GuestAgentChannel = "org.qemu.guest_agent.0"

// ExecChannel is the name of the i-th virtio-serial port that carries the
// bytes of a TTY exec session (vmpod.exec.0, vmpod.exec.1, ...). In the
// guest it is /dev/virtio-ports/vmpod.exec.<i>.
func ExecChannel(i int) string { return fmt.Sprintf("vmpod.exec.%d", i) }

// StdoutChannel and StderrChannel are the virtio-serial ports that carry
// the stdout and stderr of a container's command; in the guest they are
// /dev/virtio-ports/vmpod.stdout and /dev/virtio-ports/vmpod.stderr.
const (
	StdoutChannel = "vmpod.stdout"
	StderrChannel = "vmpod.stderr"
)

func validateChannels(spec *DomainSpec, p *specProblems) {
	checkSocketPath(p, "guest agent socket", spec.GuestAgentSocket, false)
	for i, s := range spec.ExecSockets {
		checkSocketPath(p, fmt.Sprintf("exec socket %d", i), s, true)
	}
	if (spec.StdoutSocket == "") != (spec.StderrSocket == "") {
		p.addf("the command's stdout and stderr sockets come together (stdout %q, stderr %q)", spec.StdoutSocket, spec.StderrSocket)
	}
	checkSocketPath(p, "stdout socket", spec.StdoutSocket, false)
	checkSocketPath(p, "stderr socket", spec.StderrSocket, false)
}

// configureChannels adds the qemu-guest-agent channel and the exec
// channels, each a unix socket QEMU binds, when the spec asks for them.
func configureChannels(spec *DomainSpec, dom *libvirtxml.Domain) error {
	channel := func(path, name string) libvirtxml.DomainChannel {
		return libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{
				UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: path},
			},
			Target: &libvirtxml.DomainChannelTarget{
				VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: name},
			},
		}
	}
	if spec.GuestAgentSocket != "" {
		dom.Devices.Channels = append(dom.Devices.Channels, channel(spec.GuestAgentSocket, GuestAgentChannel))
	}
	for i, s := range spec.ExecSockets {
		dom.Devices.Channels = append(dom.Devices.Channels, channel(s, ExecChannel(i)))
	}
	if spec.StdoutSocket != "" {
		dom.Devices.Channels = append(dom.Devices.Channels,
			channel(spec.StdoutSocket, StdoutChannel), channel(spec.StderrSocket, StderrChannel))
	}
	if len(dom.Devices.Channels) == 0 {
		return nil
	}
	// libvirt would add the virtio-serial controller the channels need by
	// itself; written out so the XML says what the guest gets.
	dom.Devices.Controllers = append(dom.Devices.Controllers, libvirtxml.DomainController{
		Type: "virtio-serial", Index: uintPtr(0),
	})
	return nil
}
