package libvirttools

import (
	"strings"

	"libvirt.org/go/libvirtxml"
)

// CFS limits libvirt accepts for <cputune> periods and quotas.
const (
	minCPUPeriodUS = 1000
	maxCPUPeriodUS = 1000000
	minCPUQuotaUS  = 1000
	maxCPUShares   = 262144
)

func validateCPU(spec *DomainSpec, p *specProblems) {
	if spec.VCPUs < 1 {
		p.addf("vcpus %d is below 1", spec.VCPUs)
	}
	if strings.ContainsFunc(spec.CPUModel, func(r rune) bool { return r <= ' ' || r == '<' || r == '>' || r == '&' }) {
		p.addf("cpu model %q contains spaces or markup", spec.CPUModel)
	}
	if spec.CPUModel == CPUModeHostPassthrough && spec.Type != DomainTypeKVM {
		p.addf("cpu model %q needs type %q", CPUModeHostPassthrough, DomainTypeKVM)
	}
	if spec.CPUPeriodUS != 0 && (spec.CPUPeriodUS < minCPUPeriodUS || spec.CPUPeriodUS > maxCPUPeriodUS) {
		p.addf("cpu period %dus is outside %d..%d", spec.CPUPeriodUS, minCPUPeriodUS, maxCPUPeriodUS)
	}
	if spec.CPUQuotaUS != 0 && spec.CPUQuotaUS != -1 && spec.CPUQuotaUS < minCPUQuotaUS {
		p.addf("cpu quota %dus is neither -1 nor at least %d", spec.CPUQuotaUS, minCPUQuotaUS)
	}
	if spec.CPUShares > maxCPUShares {
		p.addf("cpu shares %d is above %d", spec.CPUShares, maxCPUShares)
	}
	checkAbsPath(p, "cgroup partition", spec.CgroupPartition, false)
}

// configureCPU sets the vCPU count and the CPU model. With no model, a kvm
// guest gets host-model (the host's features, migratable) and a qemu
// (TCG) guest libvirt's default, which libvirt 9.0 records as
// <cpu mode='custom'><model>qemu64</model>. host-passthrough is kvm-only:
// libvirt refuses to start it under TCG ("not supported by hypervisor"),
// hence the validation; host-model does start under TCG.
func configureCPU(spec *DomainSpec, dom *libvirtxml.Domain) error {
	dom.VCPU = &libvirtxml.DomainVCPU{Placement: "static", Value: uint(spec.VCPUs)}
	model := spec.CPUModel
	if model == "" && spec.Type == DomainTypeKVM {
		model = CPUModeHostModel
	}
	switch model {
	case "":
	case CPUModeHostModel, CPUModeHostPassthrough:
		dom.CPU = &libvirtxml.DomainCPU{Mode: model}
	default:
		dom.CPU = &libvirtxml.DomainCPU{
			Mode:  "custom",
			Match: "exact",
			Model: &libvirtxml.DomainCPUModel{Fallback: "forbid", Value: model},
		}
	}
	return nil
}

// configureCPUTune maps the container's CPU resources onto the domain's
// cgroup.
//
// Why global_period/global_quota and not period/quota: libvirt applies
// <period>/<quota> to each vCPU thread separately, so a quota of 2 CPUs
// on a 4-vCPU guest would allow 8; Kubernetes limits are for the whole
// container, which global_* (whole domain: vCPUs, emulator and I/O
// threads) expresses.
func configureCPUTune(spec *DomainSpec, dom *libvirtxml.Domain) error {
	var tune libvirtxml.DomainCPUTune
	set := false
	if spec.CPUShares != 0 {
		tune.Shares = &libvirtxml.DomainCPUTuneShares{Value: uint(spec.CPUShares)}
		set = true
	}
	if spec.CPUPeriodUS != 0 {
		tune.GlobalPeriod = &libvirtxml.DomainCPUTunePeriod{Value: spec.CPUPeriodUS}
		set = true
	}
	if spec.CPUQuotaUS != 0 {
		tune.GlobalQuota = &libvirtxml.DomainCPUTuneQuota{Value: spec.CPUQuotaUS}
		set = true
	}
	if set {
		dom.CPUTune = &tune
	}
	if spec.CgroupPartition != "" {
		dom.Resource = &libvirtxml.DomainResource{Partition: spec.CgroupPartition}
	}
	return nil
}
