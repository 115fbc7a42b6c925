package libvirttools

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"
)

// MetadataNamespace is the XML namespace of vmpod's element in a domain's
// <metadata>. The trailing version changes only with an incompatible
// layout.
const MetadataNamespace = "https://vmpod.dev/xmlns/domain/1"

// metadataElement is the local name of vmpod's element in <metadata>.
const metadataElement = "vmpod"

// Metadata identifies the pod and container a domain runs. It is written
// into the domain so that after a restart vmpod can map the domains libvirt
// still has back to its own records.
type Metadata struct {
	// SandboxID is the CRI pod sandbox ID; required.
	SandboxID string
	// ContainerID is the CRI container ID; "" while the domain only
	// represents the sandbox.
	ContainerID string
	// PodName, PodNamespace, PodUID and Attempt are the sandbox's CRI
	// PodSandboxMetadata.
	PodName      string
	PodNamespace string
	PodUID       string
	Attempt      uint32
	// Instance identifies the vmpod (its state directory) that owns the
	// domain, so that recovery removes only its own orphans on a libvirtd
	// other vmpods share.
	Instance string
}

// metadataXML is Metadata as stored:
//
//	<vmpod xmlns="https://vmpod.dev/xmlns/domain/1">
//	  <instance id="..."/>
//	  <sandbox id="..."/>
//	  <container id="..."/>
//	  <pod name="..." namespace="..." uid="..." attempt="0"/>
//	</vmpod>
type metadataXML struct {
	XMLName   xml.Name `xml:"https://vmpod.dev/xmlns/domain/1 vmpod"`
	Instance  *idXML   `xml:"instance"`
	Sandbox   idXML    `xml:"sandbox"`
	Container *idXML   `xml:"container"`
	Pod       podXML   `xml:"pod"`
}

type idXML struct {
	ID string `xml:"id,attr"`
}

type podXML struct {
	Name      string `xml:"name,attr"`
	Namespace string `xml:"namespace,attr"`
	UID       string `xml:"uid,attr"`
	Attempt   uint32 `xml:"attempt,attr"`
}

func validateMetadata(m *Metadata, p *specProblems) {
	if m.SandboxID == "" {
		p.addf("metadata: empty sandbox id")
	}
}

// configureMetadata stores spec.Metadata in vmpod's namespace.
func configureMetadata(spec *DomainSpec, dom *libvirtxml.Domain) error {
	m := spec.Metadata
	doc := metadataXML{
		Sandbox: idXML{ID: m.SandboxID},
		Pod:     podXML{Name: m.PodName, Namespace: m.PodNamespace, UID: m.PodUID, Attempt: m.Attempt},
	}
	if m.ContainerID != "" {
		doc.Container = &idXML{ID: m.ContainerID}
	}
	if m.Instance != "" {
		doc.Instance = &idXML{ID: m.Instance}
	}
	// Indented to match libvirtxml's two-space layout, for readable
	// golden files; libvirt ignores the whitespace.
	b, err := xml.MarshalIndent(doc, "    ", "  ")
	if err != nil {
		return fmt.Errorf("marshal metadata: %w", err)
	}
	dom.Metadata = &libvirtxml.DomainMetadata{XML: "\n" + string(b) + "\n  "}
	return nil
}

// ParseMetadata reads vmpod's metadata back from a domain's XML (as
// virDomainGetXMLDesc returns it). found is false for a domain without
// vmpod metadata, i.e. one vmpod did not create. Malformed XML gives an
// error wrapping errdefs.ErrInvalidArgument.
func ParseMetadata(domainXML string) (m Metadata, found bool, err error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return Metadata{}, false, fmt.Errorf("parse domain XML: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dom.Metadata == nil {
		return Metadata{}, false, nil
	}
	// <metadata> may hold other applications' elements too; vmpod's is
	// recognised by namespace, whatever prefix libvirt wrote it with.
	dec := xml.NewDecoder(strings.NewReader(dom.Metadata.XML))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return Metadata{}, false, nil
		}
		if err != nil {
			return Metadata{}, false, fmt.Errorf("parse metadata of domain %q: %v: %w", dom.Name, err, errdefs.ErrInvalidArgument)
		}
		start, ok := tok.(xml.StartElement)
		if !ok || start.Name.Space != MetadataNamespace || start.Name.Local != metadataElement {
			continue
		}
		var doc metadataXML
		if err := dec.DecodeElement(&doc, &start); err != nil {
			return Metadata{}, false, fmt.Errorf("parse metadata of domain %q: %v: %w", dom.Name, err, errdefs.ErrInvalidArgument)
		}
		m = Metadata{
			SandboxID:    doc.Sandbox.ID,
			PodName:      doc.Pod.Name,
			PodNamespace: doc.Pod.Namespace,
			PodUID:       doc.Pod.UID,
			Attempt:      doc.Pod.Attempt,
		}
		if doc.Container != nil {
			m.ContainerID = doc.Container.ID
		}
		if doc.Instance != nil {
			m.Instance = doc.Instance.ID
		}
		return m, true, nil
	}
}
