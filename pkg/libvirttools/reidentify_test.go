package libvirttools

import (
	"strings"
	"testing"
)

const savedXML = `<domain type='qemu'>
  <name>vmpod-old</name>
  <uuid>11111111-1111-1111-1111-111111111111</uuid>
  <genid>33333333-3333-3333-3333-333333333333</genid>
  <metadata>
    <vmpod:vmpod xmlns:vmpod="https://vmpod.dev/xmlns/domain/1">
      <vmpod:sandbox id="sb-old"/>
      <vmpod:pod name="a" namespace="ns" uid="u-old" attempt="0"/>
    </vmpod:vmpod>
  </metadata>
  <memory unit='KiB'>196608</memory>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/vmpod/containers/old/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <interface type='ethernet'>
      <mac address='02:00:00:00:00:01'/>
      <target dev='vtold0' managed='no'/>
      <model type='virtio'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='/run/vmpod/vms/old/serial.sock'/>
      <log file='/var/lib/vmpod/containers/old/serial.log' append='on'/>
    </serial>
  </devices>
</domain>
`

func TestReidentify(t *testing.T) {
	out, err := Reidentify(savedXML, Reidentity{
		Name: "vmpod-new", UUID: "22222222-2222-2222-2222-222222222222",
		Metadata: Metadata{SandboxID: "sb-new", ContainerID: "new", PodName: "b", PodNamespace: "ns", PodUID: "u-new"},
		Dirs:     map[string]string{"/var/lib/vmpod/containers/old": "/var/lib/vmpod/containers/new", "/run/vmpod/vms/old": "/run/vmpod/vms/new"},
		Taps:     map[string]string{"vtold0": "vtnew0"},
		GenID:    "44444444-4444-4444-4444-444444444444",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"vmpod-old", "1111", "3333", "sb-old", "u-old", "containers/old/", "vms/old/", "vtold0"} {
		if strings.Contains(out, gone) {
			t.Errorf("%q is still in\n%s", gone, out)
		}
	}
	for _, kept := range []string{"<mac address='02:00:00:00:00:01'/>", "slot='0x04'", "<memory unit='KiB'>196608</memory>", "/var/lib/vmpod/containers/new/root.qcow2", "dev='vtnew0'"} {
		if !strings.Contains(out, kept) {
			t.Errorf("%q is missing from\n%s", kept, out)
		}
	}
	m, found, err := ParseMetadata(out)
	if err != nil || !found || m.SandboxID != "sb-new" || m.ContainerID != "new" || m.PodUID != "u-new" {
		t.Fatalf("metadata %+v %v %v", m, found, err)
	}
}

func TestReidentifyRefuses(t *testing.T) {
	id := Reidentity{Name: "n", UUID: "22222222-2222-2222-2222-222222222222", Metadata: Metadata{SandboxID: "s"}}
	for name, x := range map[string]string{
		"not XML":     "<domain",
		"no metadata": strings.Replace(savedXML, "<metadata>", "<x>", 1)[:0] + "<domain type='qemu'><name>a</name><uuid>11111111-1111-1111-1111-111111111111</uuid></domain>",
	} {
		if _, err := Reidentify(x, id); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Reidentify(savedXML, Reidentity{Name: "n", UUID: id.UUID, Metadata: id.Metadata, Dirs: map[string]string{"": "/x"}}); err == nil {
		t.Error("an empty directory: accepted")
	}
}
