package libvirttools

import "libvirt.org/go/libvirtxml"

func validateMemory(spec *DomainSpec, p *specProblems) {
	if spec.MemoryBytes < MinMemoryBytes {
		p.addf("memory %d bytes is below the %d MiB minimum", spec.MemoryBytes, MinMemoryBytes>>20)
	}
}

// configureMemory sets the guest RAM, in KiB (the unit libvirt stores, so
// the XML it gives back matches). There is no ballooning target below it:
// currentMemory equals memory.
func configureMemory(spec *DomainSpec, dom *libvirtxml.Domain) error {
	kib := uint((spec.MemoryBytes + 1023) / 1024)
	dom.Memory = &libvirtxml.DomainMemory{Value: kib, Unit: "KiB"}
	dom.CurrentMemory = &libvirtxml.DomainCurrentMemory{Value: kib, Unit: "KiB"}
	return nil
}
