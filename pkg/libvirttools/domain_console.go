package libvirttools

import "libvirt.org/go/libvirtxml"

func validateConsole(spec *DomainSpec, p *specProblems) {
	checkSocketPath(p, "serial socket", spec.SerialSocket, true)
	checkAbsPath(p, "serial log", spec.SerialLog, true)
}

// configureConsole wires the guest's ttyS0 to a unix socket QEMU listens
// on (one client at a time: attach), with virtlogd appending a raw copy of
// everything the guest writes to SerialLog (kubectl logs). This exact
// wiring was proven against libvirt 9.0.
//
// The <console> is the serial port's alias, not a second chardev: libvirt
// adds it (as a copy of the serial's source and log) when it is missing,
// so it is written out the same way to keep the defined XML equal to what
// libvirt gives back.
func configureConsole(spec *DomainSpec, dom *libvirtxml.Domain) error {
	source := func() *libvirtxml.DomainChardevSource {
		return &libvirtxml.DomainChardevSource{
			UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: spec.SerialSocket},
		}
	}
	dom.Devices.Serials = append(dom.Devices.Serials, libvirtxml.DomainSerial{
		Source: source(),
		Target: &libvirtxml.DomainSerialTarget{
			Type:  "isa-serial",
			Port:  uintPtr(0),
			Model: &libvirtxml.DomainSerialTargetModel{Name: "isa-serial"},
		},
		Log: &libvirtxml.DomainChardevLog{File: spec.SerialLog, Append: "on"},
	})
	dom.Devices.Consoles = append(dom.Devices.Consoles, libvirtxml.DomainConsole{
		Source: source(),
		Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: uintPtr(0)},
		Log:    &libvirtxml.DomainChardevLog{File: spec.SerialLog, Append: "on"},
	})
	return nil
}
