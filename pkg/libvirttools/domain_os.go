package libvirttools

import "libvirt.org/go/libvirtxml"

// Machine types: i440fx for BIOS guests, q35 for UEFI ones (OVMF's
// secure-boot builds need q35's SMM; plain OVMF would run on either, q35
// is used for all UEFI guests so there is one UEFI layout).
const (
	machineBIOS = "pc"
	machineUEFI = "q35"
)

func validateFirmware(spec *DomainSpec, p *specProblems) {
	switch spec.Firmware {
	case "", FirmwareBIOS:
	case FirmwareUEFI:
		checkAbsPath(p, "uefi code", spec.UEFI.Code, true)
		checkAbsPath(p, "uefi vars template", spec.UEFI.VarsTemplate, true)
		checkAbsPath(p, "uefi vars", spec.UEFI.Vars, false)
	default:
		p.addf("firmware %q is neither %q nor %q", spec.Firmware, FirmwareBIOS, FirmwareUEFI)
	}
	if spec.TBCacheMiB < 0 {
		p.addf("tb-cache %d MiB is negative", spec.TBCacheMiB)
	}
}

func isUEFI(spec *DomainSpec) bool { return spec.Firmware == FirmwareUEFI }

// configureOS sets the machine type and firmware. The boot order is per
// device (see configureDisks), so there is no <os><boot dev=...>.
func configureOS(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.OS = &libvirtxml.DomainOS{
		Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: machineBIOS, Type: "hvm"},
	}
	if isUEFI(spec) {
		dom.OS.Type.Machine = machineUEFI
		dom.OS.Loader = &libvirtxml.DomainLoader{Path: spec.UEFI.Code, Readonly: "yes", Type: "pflash"}
		dom.OS.NVRam = &libvirtxml.DomainNVRam{NVRam: spec.UEFI.Vars, Template: spec.UEFI.VarsTemplate}
	}
	return nil
}

// configureFeatures enables ACPI and the APIC (ACPI is what lets a
// graceful shutdown reach the guest) and, for TCG guests, sizes the
// translation block cache.
func configureFeatures(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.Features = &libvirtxml.DomainFeatureList{
		ACPI: &libvirtxml.DomainFeature{},
		APIC: &libvirtxml.DomainFeatureAPIC{},
	}
	if spec.Type == DomainTypeQEMU && spec.TBCacheMiB > 0 {
		dom.Features.TCG = &libvirtxml.DomainFeatureTCG{
			TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: uint(spec.TBCacheMiB)},
		}
	}
	return nil
}

// configureClock keeps the guest RTC in UTC.
func configureClock(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.Clock = &libvirtxml.DomainClock{Offset: "utc"}
	return nil
}

// configureLifecycle makes a guest poweroff or crash end the domain (the
// container exits) while a guest reboot stays inside the running domain,
// and disables guest suspend, which the runtime could not report.
func configureLifecycle(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.OnPoweroff = "destroy"
	dom.OnReboot = "restart"
	dom.OnCrash = "destroy"
	dom.PM = &libvirtxml.DomainPM{
		SuspendToMem:  &libvirtxml.DomainPMPolicy{Enabled: "no"},
		SuspendToDisk: &libvirtxml.DomainPMPolicy{Enabled: "no"},
	}
	return nil
}
