package libvirttools

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirtxml"
)

// Reidentity is what changes when a saved VM comes back as another
// container: its name, UUID and metadata, the directories of its files
// and sockets, and its taps. Everything else in the definition (the
// device model QEMU's saved state must match) stays as it was.
type Reidentity struct {
	Name, UUID string
	Metadata   Metadata
	// Dirs maps each old directory to its new one; every path below an
	// old directory moves below the new one.
	Dirs map[string]string
	// Taps maps each old tap name to its new one.
	Taps map[string]string
	// GenID, when set, replaces the VM generation ID (the definition must
	// have one): the guest sees a new VM and reseeds its RNG.
	GenID string
}

var (
	nameRE     = regexp.MustCompile(`<name>[^<]*</name>`)
	uuidRE     = regexp.MustCompile(`<uuid>[^<]*</uuid>`)
	metadataRE = regexp.MustCompile(`(?s)<metadata>.*?</metadata>`)
	genidRE    = regexp.MustCompile(`<genid>[^<]*</genid>|<genid/>`)
)

// Reidentify rewrites a domain XML as libvirt wrote it (a save image's
// definition) with r, as text: libvirt's restore refuses a definition
// whose devices differ from the saved ones, so nothing is parsed and
// marshalled again. It fails with errdefs.ErrInvalidArgument when the
// XML lacks one of the parts it rewrites or still names an old directory
// or tap afterwards.
func Reidentify(domainXML string, r Reidentity) (string, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("saved domain definition: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return "", bad("%v", err)
	}
	if dom.Name == "" || dom.UUID == "" || dom.Metadata == nil {
		return "", bad("no name, uuid or metadata")
	}
	md := &libvirtxml.Domain{}
	if err := configureMetadata(&DomainSpec{Metadata: r.Metadata}, md); err != nil {
		return "", err
	}
	out := replaceFirst(nameRE, domainXML, "<name>"+xmlEscape(r.Name)+"</name>")
	out = replaceFirst(uuidRE, out, "<uuid>"+r.UUID+"</uuid>")
	out = replaceFirst(metadataRE, out, "<metadata>"+md.Metadata.XML+"</metadata>")
	if r.GenID != "" {
		if dom.GenID == nil {
			return "", bad("no VM generation ID to renew")
		}
		out = replaceFirst(genidRE, out, "<genid>"+r.GenID+"</genid>")
	}
	for old, nu := range r.Dirs {
		if old == "" || nu == "" {
			return "", bad("an empty directory in the rewrite")
		}
		out = strings.ReplaceAll(out, old+"/", nu+"/")
		if strings.Contains(out, old+"/") {
			return "", bad("%s is still named", old)
		}
	}
	for old, nu := range r.Taps {
		for _, q := range []string{"'", `"`} {
			out = strings.ReplaceAll(out, "dev="+q+old+q, "dev="+q+nu+q)
		}
	}
	var check libvirtxml.Domain
	if err := check.Unmarshal(out); err != nil {
		return "", bad("after the rewrite: %v", err)
	}
	if check.Name != r.Name || !strings.EqualFold(check.UUID, r.UUID) || (r.GenID != "" && (check.GenID == nil || !strings.EqualFold(check.GenID.Value, r.GenID))) {
		return "", bad("the rewrite did not take (name %q, uuid %q)", check.Name, check.UUID)
	}
	if check.Devices != nil {
		for _, ifc := range check.Devices.Interfaces {
			if ifc.Target != nil {
				if _, old := r.Taps[ifc.Target.Dev]; old {
					return "", bad("tap %s is still named", ifc.Target.Dev)
				}
			}
		}
	}
	return out, nil
}

func replaceFirst(re *regexp.Regexp, s, with string) string {
	loc := re.FindStringIndex(s)
	if loc == nil {
		return s
	}
	return s[:loc[0]] + with + s[loc[1]:]
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
