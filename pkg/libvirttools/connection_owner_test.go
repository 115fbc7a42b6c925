package libvirttools

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseQEMUOwner(t *testing.T) {
	caps := `<capabilities><host><cpu><arch>x86_64</arch></cpu>
<secmodel><model>none</model><doi>0</doi></secmodel>
<secmodel><model>dac</model><doi>0</doi>
<baselabel type='kvm'>+64055:+64055</baselabel><baselabel type='qemu'>+107:+108</baselabel></secmodel>
</host></capabilities>`
	for typ, want := range map[string]Owner{DomainTypeKVM: {64055, 64055}, DomainTypeQEMU: {107, 108}} {
		got, err := parseQEMUOwner(caps, typ)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", typ, got, err, want)
		}
	}
	if _, err := parseQEMUOwner(`<capabilities><host></host></capabilities>`, DomainTypeQEMU); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("no DAC model: %v", err)
	}
	bad := `<capabilities><host><secmodel><model>dac</model><baselabel type='qemu'>qemu:qemu</baselabel></secmodel></host></capabilities>`
	if _, err := parseQEMUOwner(bad, DomainTypeQEMU); err == nil {
		t.Error("a label with names was accepted")
	}
}
