package libvirttools

import (
	"path/filepath"
	"regexp"

	"libvirt.org/go/libvirtxml"
)

// Filesystem drivers for host directories shared into the guest.
const (
	FilesystemVirtiofs = "virtiofs"
	Filesystem9p       = "9p"
)

// Filesystem is a host directory shared into the guest under a mount tag.
type Filesystem struct {
	// Source is the host directory (absolute).
	Source string
	// Tag is what the guest mounts (`mount -t virtiofs TAG DIR`); at most
	// 36 characters for virtiofs.
	Tag string
	// ReadOnly shares the directory read-only: 9p with <readonly/>;
	// virtiofs in libvirt 9.0 has no read-only mode, so a read-only
	// virtiofs share needs Binary, a virtiofsd that cannot write.
	ReadOnly bool
	// Binary, for virtiofs, is the virtiofsd libvirt runs (<binary
	// path>); "" is libvirt's default.
	Binary string
	// Driver is FilesystemVirtiofs or Filesystem9p.
	Driver string
}

var fsTagRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,36}$`)

func validateFilesystems(spec *DomainSpec, p *specProblems) {
	tags := map[string]bool{}
	for i, fs := range spec.Filesystems {
		if !filepath.IsAbs(fs.Source) {
			p.addf("filesystem %d: source %q is not an absolute path", i, fs.Source)
		}
		if !fsTagRE.MatchString(fs.Tag) {
			p.addf("filesystem %d: tag %q must be 1-36 characters of [A-Za-z0-9_.-]", i, fs.Tag)
		}
		if tags[fs.Tag] {
			p.addf("filesystem %d: duplicate tag %q", i, fs.Tag)
		}
		tags[fs.Tag] = true
		if fs.Driver != FilesystemVirtiofs && fs.Driver != Filesystem9p {
			p.addf("filesystem %d: driver %q is not virtiofs or 9p", i, fs.Driver)
		}
		if fs.Driver == FilesystemVirtiofs && fs.ReadOnly && fs.Binary == "" {
			p.addf("filesystem %d: read-only virtiofs needs a virtiofsd that enforces it (binary)", i)
		}
		if fs.Binary != "" && (fs.Driver != FilesystemVirtiofs || !filepath.IsAbs(fs.Binary)) {
			p.addf("filesystem %d: binary %q needs virtiofs and an absolute path", i, fs.Binary)
		}
	}
}

// configureFilesystems adds the shared directories. virtiofs needs the
// guest's memory shared with virtiofsd, so any virtiofs share makes guest
// RAM a shared memfd.
func configureFilesystems(spec *DomainSpec, dom *libvirtxml.Domain) error {
	virtiofs := false
	for _, fs := range spec.Filesystems {
		d := libvirtxml.DomainFilesystem{
			Source: &libvirtxml.DomainFilesystemSource{Mount: &libvirtxml.DomainFilesystemSourceMount{Dir: fs.Source}},
			Target: &libvirtxml.DomainFilesystemTarget{Dir: fs.Tag},
		}
		switch fs.Driver {
		case FilesystemVirtiofs:
			virtiofs = true
			d.AccessMode = "passthrough"
			d.Driver = &libvirtxml.DomainFilesystemDriver{Type: "virtiofs"}
			if fs.Binary != "" {
				d.Binary = &libvirtxml.DomainFilesystemBinary{Path: fs.Binary}
			}
		case Filesystem9p:
			d.AccessMode = "mapped"
			if fs.ReadOnly {
				d.ReadOnly = &libvirtxml.DomainFilesystemReadOnly{}
			}
		}
		dom.Devices.Filesystems = append(dom.Devices.Filesystems, d)
	}
	if virtiofs {
		dom.MemoryBacking = &libvirtxml.DomainMemoryBacking{
			MemorySource: &libvirtxml.DomainMemorySource{Type: "memfd"},
			MemoryAccess: &libvirtxml.DomainMemoryAccess{Mode: "shared"},
		}
	}
	return nil
}
