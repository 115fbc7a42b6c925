package libvirttools

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseMetadataRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta Metadata
	}{
		{"full", Metadata{
			SandboxID: "5ad3f1e0c0ffee", ContainerID: "0123456789abcdef",
			PodName: "web", PodNamespace: "default", PodUID: "uid-1", Attempt: 3,
		}},
		{"sandbox only", Metadata{SandboxID: "5ad3f1e0c0ffee", PodName: "web"}},
		{"markup in values", Metadata{SandboxID: `a<b>&"c'`, PodName: "x&y", PodNamespace: "<ns>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := baseSpec()
			spec.Metadata = tc.meta
			doc, err := DomainXML(spec)
			if err != nil {
				t.Fatal(err)
			}
			got, found, err := ParseMetadata(doc)
			if err != nil || !found {
				t.Fatalf("ParseMetadata = %+v, %v, %v", got, found, err)
			}
			if got != tc.meta {
				t.Errorf("ParseMetadata = %+v, want %+v", got, tc.meta)
			}
		})
	}
}

// TestParseMetadataFromLibvirt reads the XML libvirt 9.0 gave back for the
// minimal-tcg golden domain (virsh dumpxml; name changed at define time).
func TestParseMetadataFromLibvirt(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("testdata", "libvirt9-dumpxml-minimal-tcg.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got, found, err := ParseMetadata(string(doc))
	if err != nil || !found {
		t.Fatalf("ParseMetadata = %+v, %v, %v", got, found, err)
	}
	if want := baseSpec().Metadata; got != want {
		t.Errorf("ParseMetadata = %+v, want %+v", got, want)
	}
}

func TestParseMetadataVariants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		doc       string
		wantFound bool
		want      Metadata
	}{
		{
			name: "no metadata",
			doc:  `<domain type='kvm'><name>other</name></domain>`,
		},
		{
			name: "only foreign metadata",
			doc: `<domain type='kvm'><name>other</name><metadata>
				<libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo>
			</metadata></domain>`,
		},
		{
			name: "same local name, other namespace",
			doc:  `<domain type='kvm'><name>other</name><metadata><vmpod xmlns="https://example.com/vmpod"><sandbox id="x"/></vmpod></metadata></domain>`,
		},
		{
			// virDomainSetMetadata writes the element with a prefix.
			name: "prefixed, after foreign metadata",
			doc: `<domain type='kvm'><name>vmpod-1</name><metadata>
				<libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"/>
				<v:vmpod xmlns:v="https://vmpod.dev/xmlns/domain/1"><v:sandbox id="s1"/><v:container id="c1"/><v:pod name="p" namespace="n" uid="u" attempt="2"/></v:vmpod>
			</metadata></domain>`,
			wantFound: true,
			want:      Metadata{SandboxID: "s1", ContainerID: "c1", PodName: "p", PodNamespace: "n", PodUID: "u", Attempt: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := ParseMetadata(tc.doc)
			if err != nil {
				t.Fatal(err)
			}
			if found != tc.wantFound || got != tc.want {
				t.Errorf("ParseMetadata = %+v, %v; want %+v, %v", got, found, tc.want, tc.wantFound)
			}
		})
	}
}

func TestParseMetadataMalformed(t *testing.T) {
	for _, doc := range []string{
		`<domain`,
		`<domain><metadata><vmpod xmlns="https://vmpod.dev/xmlns/domain/1"><pod attempt="many"/></vmpod></metadata></domain>`,
	} {
		if _, _, err := ParseMetadata(doc); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseMetadata(%q) error = %v, want ErrInvalidArgument", doc, err)
		}
	}
}
