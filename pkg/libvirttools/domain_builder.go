package libvirttools

import (
	"fmt"

	"libvirt.org/go/libvirtxml"
)

// The domain builder turns a DomainSpec into libvirt domain XML. It is
// pure: no libvirt calls, no clock, no random source, no file system, so
// the same spec always gives byte-identical XML (golden-tested in
// testdata/). Each area of the domain has its own configurator, applied in
// a fixed order to one *libvirtxml.Domain; validation of each area lives
// next to its configurator.

// domainConfigurator fills in one area of dom from spec, which it must not
// modify. spec has been validated already.
type domainConfigurator func(spec *DomainSpec, dom *libvirtxml.Domain) error

// domainConfigurators run in this order; the XML element order is fixed
// by libvirtxml's struct layout, not by this list.
var domainConfigurators = []domainConfigurator{
	configureIdentity,
	configureMetadata,
	configureMemory,
	configureCPU,
	configureCPUTune,
	configureOS,
	configureFeatures,
	configureClock,
	configureLifecycle,
	configureDisks,
	configureFilesystems,
	configureNICs,
	configureConsole,
	configureChannels,
	configureBaseDevices,
}

// BuildDomain validates spec and returns the domain definition. Errors wrap
// errdefs.ErrInvalidArgument.
func BuildDomain(spec DomainSpec) (*libvirtxml.Domain, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	dom := &libvirtxml.Domain{Devices: &libvirtxml.DomainDeviceList{}}
	for _, configure := range domainConfigurators {
		if err := configure(&spec, dom); err != nil {
			return nil, fmt.Errorf("build domain %q: %w", spec.Name, err)
		}
	}
	return dom, nil
}

// DomainXML is BuildDomain followed by marshalling to the XML document
// virDomainDefineXML takes.
func DomainXML(spec DomainSpec) (string, error) {
	dom, err := BuildDomain(spec)
	if err != nil {
		return "", err
	}
	doc, err := dom.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain %q: %w", spec.Name, err)
	}
	return doc, nil
}

func configureIdentity(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.Type = spec.Type
	dom.Name = spec.Name
	dom.UUID = spec.UUID
	dom.Devices.Emulator = spec.Emulator
	if spec.GenID {
		dom.GenID = &libvirtxml.DomainGenID{}
	}
	return nil
}

// uintPtr returns a pointer to v, for libvirtxml's optional indexes.
func uintPtr(v uint) *uint { return &v }
