package lifecycle

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/podspec"
	"github.com/vmpod/vmpod/pkg/rollback"
	"github.com/vmpod/vmpod/pkg/version"
	"github.com/vmpod/vmpod/pkg/vm"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// Warm start (docs/snapshots.md#warm-start): the first VM pod of a
// template key boots cold; once it is ready vmpod saves it as a template
// (snapshotInPlace: the guest runs on). Later pods of the same key are
// restores of the template, each with a fresh copy of its disk, a new VM
// generation ID, its own seed, hostname, MACs and lease.
//
// The key covers everything the template's memory may hold of its first
// pod beyond its identity: the namespace, the image, the VM's shape and
// interfaces, vmpod's version and the seed's whole input (user data,
// env, files, keys) except the pod's hostname, instance ID and
// addresses. So a template serves only pods that would have booted with
// the same secrets, in the same namespace.

// WarmStartState is a cold-booted container's warm start: its template
// key and readiness marker.
type WarmStartState struct {
	Key    string `json:"key"`
	Marker string `json:"marker,omitempty"`
}

// templateMeta is a template's meta.json.
const templateMeta = "meta.json"

// TemplatesDir holds the warm start templates, one directory per image.
func (c *Controller) TemplatesDir() string { return filepath.Join(c.cfg.StateDir, "templates") }

func (c *Controller) templateDir(imageID, key string) string {
	return filepath.Join(c.TemplatesDir(), strings.TrimPrefix(imageID, "sha256:"), key)
}

// warmStartOn says whether a pod asks for warm start: its annotation,
// else its handler's warm_start.
func warmStartOn(h config.Handler, o podspec.Options) bool {
	if o.WarmStart.Enabled != nil {
		return *o.WarmStart.Enabled
	}
	return h.WarmStart
}

// templateKey is the warm start key of a container (see above).
func templateKey(namespace, imageID string, shape podspec.Shape, nics int, in cloudinit.Input) string {
	shape.CgroupParent = ""
	in.Hostname, in.InstanceID, in.NICs = "", "", nil
	b, _ := json.Marshal(struct {
		Namespace, Image, Version string
		Shape                     podspec.Shape
		NICs                      int
		Seed                      cloudinit.Input
	}{namespace, imageID, version.Version, shape, nics, in})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// warmStartKey is the container's template key, "" when warm start is
// off for it or it cannot have one (a command, shares or block devices:
// they cannot be saved, see CheckpointContainer).
func (c *Controller) warmStartKey(h config.Handler, o podspec.Options, sbRec SandboxRecord, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig,
	img image.Image, shape podspec.Shape, mounts volumes.Plan, command *CommandState) string {
	if !warmStartOn(h, o) || command != nil || len(mounts.Filesystems) > 0 || len(mounts.Disks) > 0 {
		return ""
	}
	return templateKey(sbCfg.GetMetadata().GetNamespace(), img.ID, shape, len(netInterfaces(sbRec)),
		seedInput(sbRec, sbCfg, cfg, mounts, o.CloudInit))
}

// hasTemplate says whether a complete template exists.
func (c *Controller) hasTemplate(imageID, key string) bool {
	_, err := os.Stat(filepath.Join(c.templateDir(imageID, key), templateMeta))
	return err == nil
}

// createFromTemplate is CreateContainer for a warm start: the template's
// memory and disk are copied into the new container's directory with
// the pod's own seed, and defined as the new container (defineRestored);
// StartContainer restores it. sb.op is held by the caller.
func (c *Controller) createFromTemplate(ctx context.Context, sb *sandbox, name string, cfg *runtimeapi.ContainerConfig, img image.Image, key string, seed cloudinit.Seed) (_ string, retErr error) {
	sbRec := sb.Get()
	tdir := c.templateDir(img.ID, key)
	raw, err := os.ReadFile(filepath.Join(tdir, templateMeta))
	if err != nil {
		return "", fmt.Errorf("warm start template %s: %w", key, err)
	}
	var meta checkpointMeta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return "", fmt.Errorf("warm start template %s: %v: %w", key, err, errdefs.ErrDataLoss)
	}
	id := newID()
	log := logging.From(ctx).With(logging.KeyContainerID, id, logging.KeySandboxID, sbRec.ID, logging.KeyDomain, DomainName(id))
	var undo rollback.Steps
	defer func() { undo.Run(ctx, log, retErr) }()
	from := "warm start template " + key
	ct, err := c.beginCreate(sb, name, cfg, id, func(r *ContainerRecord) {
		r.ImageRef, r.ImageDisk = img.ID, img.Disk()
		r.Restore = &RestoreState{From: from, MemoryFile: filepath.Join(r.Dir, memberMemory)}
	}, &undo, &retErr)
	if err != nil {
		return "", err
	}
	defer ct.op.Unlock()
	layout := ct.Get().Layout()

	begin := time.Now()
	owner, err := c.qemuOwner(ctx, meta.VM.DomainType)
	if err != nil {
		return "", err
	}
	if err := layout.Create(owner.GID); err != nil {
		return "", fmt.Errorf("create container directory: %w", err)
	}
	for _, f := range []string{memberMemory, memberRoot, memberEFIVars} {
		err := copyFile(filepath.Join(tdir, f), filepath.Join(layout.Dir, f))
		if err != nil && !(f == memberEFIVars && errors.Is(err, os.ErrNotExist)) {
			return "", fmt.Errorf("copy %s of %s: %w", f, from, err)
		}
	}
	tctx, cancel := c.toolContext(ctx)
	err = cloudinit.WriteISO(tctx, seed, layout.SeedISO())
	cancel()
	if err != nil {
		return "", fmt.Errorf("write cloud-init seed for %s: %w", id, toolErr(tctx, err))
	}
	genID, err := newGenID()
	if err != nil {
		return "", err
	}
	err = c.defineRestored(ctx, ct, sb, restoredVM{from: from, meta: meta,
		img: imageOf{id: img.ID, disk: img.Disk(), format: img.Format}, genID: genID, hostname: podHostname(sb.config)})
	if err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	log.Info("container created from a warm start template", "key", key, "seconds", fmt.Sprintf("%.3f", time.Since(begin).Seconds()))
	return id, nil
}

// newGenID is a random VM generation ID (a version 4 UUID).
func newGenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// buildTemplate saves a cold-booted warm start container as its key's
// template once the guest is ready: the marker line in its console, else
// the guest agent answering. Nothing happens when the template exists or
// another container builds it. The guest is paused while it is saved,
// then runs on. It runs in its own goroutine after StartContainer.
func (c *Controller) buildTemplate(ct *container) {
	rec := ct.Get()
	ws := rec.WarmStart
	log := c.log.With(logging.KeyContainerID, rec.ID, logging.KeyDomain, rec.Domain, "key", ws.Key)
	dir := c.templateDir(rec.ImageRef, ws.Key)
	if c.hasTemplate(rec.ImageRef, ws.Key) {
		return
	}
	c.tmplMu.Lock()
	if c.tmplBuilding == nil {
		c.tmplBuilding = map[string]bool{}
	}
	if c.tmplBuilding[ws.Key] {
		c.tmplMu.Unlock()
		return
	}
	c.tmplBuilding[ws.Key] = true
	c.tmplMu.Unlock()
	defer func() {
		c.tmplMu.Lock()
		delete(c.tmplBuilding, ws.Key)
		c.tmplMu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(logging.With(context.Background(), log), c.cfg.CreateTimeout.Std())
	defer cancel()
	begin := time.Now()
	if err := c.waitReady(ctx, rec, ws.Marker); err != nil {
		log.Warn("warm start: the guest did not become ready; no template saved", logging.KeyErr, err)
		return
	}
	ready := time.Since(begin)
	ct.op.Lock()
	defer ct.op.Unlock()
	if ct.Get().State != ContainerRunning {
		return
	}
	sb, err := c.reg.sandbox(rec.SandboxID)
	if err != nil {
		return
	}
	live, err := c.libvirt.XML(ctx, rec.Domain)
	var dom libvirtxml.Domain
	if err == nil {
		err = dom.Unmarshal(live)
	}
	if err != nil {
		log.Warn("warm start: read the domain; no template saved", logging.KeyErr, err)
		return
	}
	if err := vm.PrivateDir(filepath.Dir(dir), 0); err != nil {
		log.Warn("warm start: no template directory", logging.KeyErr, err)
		return
	}
	stage, err := os.MkdirTemp(filepath.Dir(dir), ".building-")
	if err != nil {
		log.Warn("warm start: no staging directory", logging.KeyErr, err)
		return
	}
	defer os.RemoveAll(stage)
	saving := time.Now()
	m, _, err := c.snapshotInPlace(ctx, ct, sb, dom, stage, c.cfg.CreateTimeout.Std())
	if err != nil {
		log.Warn("warm start: snapshot failed; no template saved", logging.KeyErr, err)
		return
	}
	raw, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(stage, templateMeta), raw, 0o600); err != nil {
		log.Warn("warm start: write the template's metadata", logging.KeyErr, err)
		return
	}
	if err := os.Rename(stage, dir); err != nil {
		log.Warn("warm start: store the template", logging.KeyErr, err)
		return
	}
	log.Info("warm start: template saved", "ready_seconds", fmt.Sprintf("%.3f", ready.Seconds()), "save_seconds", fmt.Sprintf("%.3f", time.Since(saving).Seconds()))
}

// maxMarkerScan bounds how much of a console log waitReady reads.
const maxMarkerScan = 4 << 20

// waitReady waits until a VM is ready for its template: a console line
// matching marker (read from its log), else its guest agent answering.
func (c *Controller) waitReady(ctx context.Context, rec ContainerRecord, marker string) error {
	if marker == "" {
		// Each wait is bounded by agent_wait_timeout; a slow boot gets
		// as many as ctx allows.
		for {
			err := c.waitAgent(ctx, guest.NewAgent(c.libvirt, rec.Domain), rec.ID)
			if err == nil || ctx.Err() != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Second):
			}
		}
	}
	re, err := regexp.Compile(marker)
	if err != nil {
		return err
	}
	path := rec.LogPath
	if path == "" {
		path = rec.Layout().ConsoleLog()
	}
	for {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(io.LimitReader(f, maxMarkerScan))
			sc.Buffer(make([]byte, 64<<10), 64<<10)
			found := false
			for sc.Scan() {
				if re.Match(sc.Bytes()) {
					found = true
					break
				}
			}
			f.Close()
			if found {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no console line matched %q: %w", marker, context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RemoveTemplates removes the warm start templates of an image (its
// removal makes them useless: their disks are overlays of it).
func (c *Controller) RemoveTemplates(imageID string) error {
	h := strings.TrimPrefix(imageID, "sha256:")
	if _, err := hex.DecodeString(h); err != nil || len(h) != 64 {
		return nil
	}
	return os.RemoveAll(filepath.Join(c.TemplatesDir(), h))
}
