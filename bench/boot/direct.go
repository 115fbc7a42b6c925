package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// baseline is vmpod's domain definition, to be started straight with
// libvirt: the inactive XML of one of its domains and the paths in it that
// belong to that container.
type baseline struct {
	xml        string
	name       string
	rootDisk   string
	socket     string
	serialLogs []string
	seed       string // the cloud-init seed ISO vmpod made, and the copy the baseline boots with
	seedCopy   string
}

var (
	nameRE      = regexp.MustCompile(`<name>[^<]*</name>`)
	uuidRE      = regexp.MustCompile(`\n?[ \t]*<uuid>[^<]*</uuid>`)
	metadataRE  = regexp.MustCompile(`(?s)\n?[ \t]*<metadata>.*?</metadata>`)
	interfaceRE = regexp.MustCompile(`(?s)\n?[ \t]*<interface .*?</interface>`)
	logFileRE   = regexp.MustCompile(`<log file=['"]([^'"]+)['"]`)
	domainTypeR = regexp.MustCompile(`<domain type=['"]([a-z]+)['"]`)
	seedRE      = regexp.MustCompile(`<source file=['"]([^'"]+\.iso)['"]`)
)

// captureBaseline takes the inactive definition of a vmpod domain (while it
// exists) with the container's disk and socket paths.
func (b *bench) captureBaseline(ctrID string) (*baseline, error) {
	ci, err := b.containerInfo(ctrID)
	if err != nil {
		return nil, fmt.Errorf("container status: %w", err)
	}
	xml, err := b.virsh("dumpxml", "--inactive", ci.Domain)
	if err != nil {
		return nil, err
	}
	bl := &baseline{xml: xml, name: ci.Domain, rootDisk: ci.Disks["root"], socket: ci.SerialSocket}
	for _, m := range logFileRE.FindAllStringSubmatch(xml, -1) {
		bl.serialLogs = append(bl.serialLogs, m[1])
	}
	// The seed (cloud-init network-config and hostname) goes with the pod;
	// the baseline boots with a copy of it.
	if m := seedRE.FindStringSubmatch(xml); m != nil {
		bl.seed, bl.seedCopy = m[1], filepath.Join(b.work, "baseline-seed.iso")
		data, err := os.ReadFile(bl.seed)
		if err != nil {
			return nil, fmt.Errorf("copy the seed: %w", err)
		}
		if err := os.WriteFile(bl.seedCopy, data, 0o644); err != nil {
			return nil, err
		}
	}
	if m := domainTypeR.FindStringSubmatch(xml); m == nil || m[1] != "qemu" {
		b.problem("vmpod's domain is not of type qemu (TCG) although VMPOD_ACCELERATOR=tcg: %v", m)
	}
	for what, p := range map[string]string{"root disk": bl.rootDisk, "serial socket": bl.socket} {
		if p == "" || !strings.Contains(xml, p) {
			return nil, fmt.Errorf("the %s %q from ContainerStatus is not in the domain XML", what, p)
		}
	}
	return bl, nil
}

// forDomain rewrites the definition for a baseline domain: its own name, no
// UUID (libvirt makes one), no vmpod metadata (so no vmpod takes it for
// its own), its own overlay, sockets and serial log, a copy of the seed,
// and no NICs:
// vmpod's NICs are taps it makes for each boot (managed='no'), which do not
// exist for the baseline. The guest's ready line does not wait for DHCP.
func (bl *baseline) forDomain(name, overlay, socket, serialLog string) string {
	x := nameRE.ReplaceAllLiteralString(bl.xml, "<name>"+name+"</name>")
	x = uuidRE.ReplaceAllString(x, "")
	x = metadataRE.ReplaceAllString(x, "")
	x = interfaceRE.ReplaceAllString(x, "")
	x = strings.ReplaceAll(x, bl.rootDisk, overlay)
	if bl.seed != "" {
		x = strings.ReplaceAll(x, bl.seed, bl.seedCopy)
	}
	x = strings.ReplaceAll(x, bl.socket, socket)
	// The other sockets beside the serial one (the guest agent's): vmpod
	// removed their directory with the pod.
	x = strings.ReplaceAll(x, filepath.Dir(bl.socket)+"/", filepath.Dir(socket)+"/")
	for _, l := range bl.serialLogs {
		x = strings.ReplaceAll(x, l, serialLog)
	}
	return x
}

// directRun is one boot of the baseline; durations are per step.
type directRun struct {
	qemuImg time.Duration // qemu-img create of the overlay
	create  time.Duration // virsh create (domain runs when it returns)
	connect time.Duration // until the serial socket accepted us
	ready   time.Duration // from t0 to the ready line
	destroy time.Duration
	err     error
}

// directBoot boots the baseline domain n: qemu-img create, virsh create,
// read the serial socket until the ready line, virsh destroy.
func (b *bench) directBoot(bl *baseline, n int) directRun {
	var r directRun
	dir := filepath.Join(b.directDir, fmt.Sprint(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	name := fmt.Sprintf("vmpodbench-%s-%d", b.tag, n)
	overlay := filepath.Join(dir, "root.qcow2")
	xmlPath := filepath.Join(dir, "domain.xml")
	sock := filepath.Join(dir, "serial.sock")
	xml := bl.forDomain(name, overlay, sock, filepath.Join(dir, "serial.log"))
	if err := os.WriteFile(xmlPath, []byte(xml), 0o644); err != nil {
		r.err = err
		return r
	}
	os.WriteFile(filepath.Join(b.work, "baseline-domain.xml"), []byte(xml), 0o644)
	deadline := time.Now().Add(b.opts.bootTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	t0 := time.Now()
	// The same command vmpod runs (pkg/lifecycle/overlay.go).
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", b.imgPath, overlay).CombinedOutput(); err != nil {
		r.err = fmt.Errorf("qemu-img create: %v: %s", err, out)
		return r
	}
	r.qemuImg = time.Since(t0)
	b.mu.Lock()
	b.directDomains[name] = true
	b.mu.Unlock()
	t1 := time.Now()
	if out, err := exec.CommandContext(ctx, "virsh", "-q", "-c", b.opts.uri, "create", xmlPath).CombinedOutput(); err != nil {
		r.err = fmt.Errorf("virsh create: %v: %s", err, strings.TrimSpace(string(out)))
		b.destroyDirect(name) // in case it started after all
		return r
	}
	r.create = time.Since(t1)
	t2 := time.Now()
	conn, connected, ready, err := waitSerial(sock, deadline)
	r.connect = connected.Sub(t2)
	if err != nil {
		r.err = err
	} else {
		r.ready = ready.Sub(t0)
	}
	t3 := time.Now()
	if err := b.destroyDirect(name); err != nil {
		b.problem("baseline %s: %v", name, err)
	}
	r.destroy = time.Since(t3)
	if conn != nil {
		conn.Close()
	}
	return r
}

// destroyDirect destroys a (transient) baseline domain, which removes it.
func (b *bench) destroyDirect(name string) error {
	if _, err := b.virsh("destroy", name); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.directDomains, name)
	b.mu.Unlock()
	return nil
}
