package libvirttools

import (
	"fmt"
	"net"

	"libvirt.org/go/libvirtxml"
)

// maxTapName is the longest Linux interface name (IFNAMSIZ - 1).
const maxTapName = 15

func (n *NIC) model() string {
	if n.Model == "" {
		return NICModelVirtio
	}
	return n.Model
}

func validateNICs(spec *DomainSpec, p *specProblems) {
	taps := map[string]bool{}
	macs := map[string]bool{}
	for i, n := range spec.NICs {
		what := fmt.Sprintf("nic %d", i)
		switch {
		case n.TapName == "":
			p.addf("%s: empty tap name", what)
		case len(n.TapName) > maxTapName:
			p.addf("%s: tap name %q is longer than %d bytes", what, n.TapName, maxTapName)
		case taps[n.TapName]:
			p.addf("%s: tap %q is used twice", what, n.TapName)
		}
		taps[n.TapName] = true
		hw, err := net.ParseMAC(n.MAC)
		switch {
		case err != nil || len(hw) != 6:
			p.addf("%s: mac %q is not a 48-bit MAC address", what, n.MAC)
		case hw[0]&1 != 0:
			p.addf("%s: mac %q is multicast", what, n.MAC)
		case macs[hw.String()]:
			p.addf("%s: mac %q is used twice", what, n.MAC)
		default:
			macs[hw.String()] = true
		}
		if !nicModels[n.model()] {
			p.addf("%s: unknown model %q", what, n.Model)
		}
	}
}

// configureNICs attaches each NIC to its pre-made tap (type ethernet,
// managed='no': libvirt neither creates nor reconfigures it; vmpod's
// network code owns it).
func configureNICs(spec *DomainSpec, dom *libvirtxml.Domain) error {
	for _, n := range spec.NICs {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil {
			return fmt.Errorf("nic %q: %w", n.TapName, err)
		}
		dom.Devices.Interfaces = append(dom.Devices.Interfaces, libvirtxml.DomainInterface{
			MAC:    &libvirtxml.DomainInterfaceMAC{Address: hw.String()},
			Source: &libvirtxml.DomainInterfaceSource{Ethernet: &libvirtxml.DomainInterfaceSourceEthernet{}},
			Target: &libvirtxml.DomainInterfaceTarget{Dev: n.TapName, Managed: "no"},
			Model:  &libvirtxml.DomainInterfaceModel{Type: n.model()},
		})
	}
	return nil
}
