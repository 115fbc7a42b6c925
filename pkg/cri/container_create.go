package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/store"
)

// cleanupTimeout bounds rollback work, which runs on a fresh context
// because the request's may be dead.
const cleanupTimeout = 2 * time.Minute

// CreateContainer defines the pod's VM: a qcow2 overlay over the pulled
// image as root disk and a persistent libvirt domain. A sandbox runs one VM
// at a time: while another container of it is not EXITED, creating one
// fails with FailedPrecondition. After it exited, the kubelet's next attempt
// boots from a fresh overlay (the root disk is ephemeral, like a container's
// writable layer).
func (s *Service) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	if cfg.GetMetadata().GetName() == "" {
		return nil, fmt.Errorf("CreateContainer: container metadata name is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, fmt.Errorf("CreateContainer: image is required: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.state.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sbCfg := sb.config
	if req.GetSandboxConfig() != nil {
		sbCfg = req.GetSandboxConfig()
	}
	ann, err := parseAnnotations(sbCfg.GetAnnotations(), cfg.GetAnnotations())
	if err != nil {
		return nil, err
	}
	name := containerName(cfg.GetMetadata(), sb.config.GetMetadata())
	id, err := s.pending.run(ctx, name, func(ctx context.Context) (string, error) {
		return s.createContainer(ctx, sb, name, cfg, sbCfg, ann)
	})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Service) createContainer(ctx context.Context, sb *sandbox, name string, cfg *runtimeapi.ContainerConfig,
	sbCfg *runtimeapi.PodSandboxConfig, ann vmAnnotations) (_ string, retErr error) {
	// The sandbox's op lock makes "no other live VM" and the creation one
	// step.
	sb.op.Lock()
	defer sb.op.Unlock()
	if st := sb.state(); st != sandboxReady {
		return "", fmt.Errorf("pod sandbox %s is %s; create containers only in a ready sandbox: %w", sb.rec.ID, st, errdefs.ErrFailedPrecondition)
	}
	for _, other := range s.state.containersOf(sb.rec.ID) {
		orec, ocfg := other.snapshot()
		st, oname := orec.State, ocfg.GetMetadata().GetName()
		if st != containerExited {
			return "", fmt.Errorf("container %s (%s) of pod sandbox %s is %s; a VM pod runs one VM at a time, so stop it before creating another: %w",
				other.rec.ID, oname, sb.rec.ID, st, errdefs.ErrFailedPrecondition)
		}
	}
	img, err := s.images.Get(cfg.GetImage().GetImage())
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", fmt.Errorf("image %q is not pulled; pull it first (crictl pull, or the kubelet's image pull): %w", cfg.GetImage().GetImage(), errdefs.ErrNotFound)
		}
		return "", err
	}
	h, err := s.cfg.ResolveHandler(sb.rec.Handler)
	if err != nil {
		return "", err
	}
	vm, err := resolveVMSpec(s.cfg, h, ann, cfg.GetLinux().GetResources(), sbCfg.GetLinux().GetCgroupParent(), img.VirtualSize)
	if err != nil {
		return "", err
	}
	// Everything that can be refused is worked out before anything is
	// created: mounts, devices and the cloud-init seed.
	mounts, err := resolveMounts(cfg, s.cfg.SharedDirType)
	if err != nil {
		return "", err
	}
	seed, err := buildSeed(sb, sbCfg, cfg, mounts)
	if err != nil {
		return "", err
	}

	id := newID()
	log := logging.From(ctx).With(logging.KeyContainerID, id, logging.KeySandboxID, sb.rec.ID, logging.KeyDomain, domainName(id))
	if err := s.state.reserve(name, id); err != nil {
		return "", fmt.Errorf("container %s: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			s.state.release(name, id)
		}
	}()
	raw, err := encodeContainerConfig(cfg)
	if err != nil {
		return "", err
	}
	resRaw, err := encodeResources(cfg.GetLinux().GetResources())
	if err != nil {
		return "", err
	}
	logPath := ""
	if cfg.GetLogPath() != "" {
		logPath = filepath.Join(sbCfg.GetLogDirectory(), cfg.GetLogPath())
	}
	dir := filepath.Join(s.containersDir(), id)
	rec := containerRecord{
		ID: id, SandboxID: sb.rec.ID, Name: name, State: containerCreating,
		ImageName: cfg.GetImage().GetImage(), ImageRef: img.ID, ImageDisk: img.Disk(), LogPath: logPath,
		Domain: domainName(id), Dir: dir, RunDir: filepath.Join(s.runDir(), id[:16]),
		RootDisk: filepath.Join(dir, "root.qcow2"), CreatedAt: s.now().UnixNano(), Config: raw, VM: vm, Resources: resRaw,
	}
	// The CREATING record goes first, so a crash at any later point leaves
	// a trace that start-up recovery cleans up.
	if err := s.state.saveContainer(rec); err != nil {
		return "", fmt.Errorf("store container record: %w", err)
	}
	c := &container{rec: rec, config: cfg}
	s.state.addContainer(c)
	defer func() {
		if retErr != nil {
			cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			defer cancel()
			if err := s.destroyContainerResources(cctx, rec); err != nil {
				// Keep it visible and removable: as EXITED, the kubelet
				// lists and removes it, and RemoveContainer retries the
				// cleanup. Its name is released so a retry can proceed.
				log.Error("rollback of failed create left resources behind; the container is kept as exited until it is removed", logging.KeyErr, err)
				failed := rec
				failed.State = containerExited
				failed.ExitCode, failed.Reason = exitError, reasonError
				failed.Message = fmt.Sprintf("creation failed (%v) and its cleanup failed (%v); remove the container to retry the cleanup", retErr, err)
				failed.FinishedAt = s.now().UnixNano()
				s.state.saveContainer(failed)
				c.setRec(failed)
				return
			}
			s.state.meta.Delete(store.Containers, id)
			s.state.removeContainer(id)
		}
	}()

	for _, d := range []string{dir, rec.RunDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("create container directory: %w", err)
		}
	}
	if err := s.overlays.Create(ctx, rec.RootDisk, s.images.Path(img.ID), img.Format, vm.RootVolumeSize); err != nil {
		return "", fmt.Errorf("create root disk for %s: %w", id, err)
	}
	seedStart := time.Now()
	if err := cloudinit.WriteISO(ctx, seed, seedISO(dir)); err != nil {
		return "", fmt.Errorf("write cloud-init seed for %s: %w", id, err)
	}
	log.Debug("cloud-init seed written", "label", seed.Label, "seconds", fmt.Sprintf("%.3f", time.Since(seedStart).Seconds()))
	spec := s.domainSpec(rec, sb)
	spec.ExtraDisks = append(spec.ExtraDisks, libvirttools.Disk{
		Path: seedISO(dir), Format: libvirttools.DiskFormatRaw, Device: libvirttools.DiskDeviceCDROM, ReadOnly: true,
	})
	spec.ExtraDisks = append(spec.ExtraDisks, mounts.disks...)
	spec.Filesystems = mounts.fs
	xml, err := libvirttools.DomainXML(spec)
	if err != nil {
		return "", fmt.Errorf("build domain for %s: %w", id, err)
	}
	log.Debug("domain XML", "xml", xml)
	if err := s.libvirt.Define(ctx, xml); err != nil {
		return "", fmt.Errorf("define domain %s: %w", rec.Domain, err)
	}
	rec.State = containerCreated
	if err := s.state.saveContainer(rec); err != nil {
		return "", fmt.Errorf("store container record: %w", err)
	}
	c.setRec(rec)
	s.containerEvent(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	log.Info("container created", "image", img.ID, "vcpus", vm.VCPUs, "memory_bytes", vm.MemoryBytes, "domain_type", vm.DomainType)
	return id, nil
}

// domainSpec turns a container record into the builder's input.
func (s *Service) domainSpec(rec containerRecord, sb *sandbox) libvirttools.DomainSpec {
	vm := rec.VM
	m := sb.config.GetMetadata()
	spec := libvirttools.DomainSpec{
		Name: rec.Domain, UUID: domainUUID(rec.ID), Type: vm.DomainType,
		VCPUs: vm.VCPUs, MemoryBytes: vm.MemoryBytes, CPUModel: vm.CPUModel,
		CPUShares: vm.CPUShares, CPUQuotaUS: vm.CPUQuotaUS, CPUPeriodUS: vm.CPUPeriodUS,
		Firmware:     vm.Firmware,
		RootDisk:     libvirttools.Disk{Path: rec.RootDisk, Format: "qcow2", Bus: vm.DiskBus},
		SerialSocket: serialSocket(rec.RunDir), SerialLog: filepath.Join(rec.Dir, "serial.log"),
		// Every VM gets the guest agent channel (exec, probes, agent info).
		GuestAgentSocket: filepath.Join(rec.RunDir, "qga.sock"),
		// And the exec channels (TTY exec).
		ExecSockets: execSockets(rec.RunDir),
		TBCacheMiB:  vm.TBCacheMiB,
		Metadata: libvirttools.Metadata{
			SandboxID: sb.rec.ID, ContainerID: rec.ID,
			PodName: m.GetName(), PodNamespace: m.GetNamespace(), PodUID: m.GetUid(), Attempt: m.GetAttempt(),
			Instance: s.state.meta.InstanceID(),
		},
	}
	if att := sandboxNetwork(sb.rec); att != nil {
		for _, ifc := range att.Interfaces {
			spec.NICs = append(spec.NICs, libvirttools.NIC{TapName: ifc.Tap, MAC: ifc.MAC})
		}
	}
	if vm.Firmware == libvirttools.FirmwareUEFI {
		spec.UEFI = libvirttools.UEFIFirmware{Code: s.cfg.OVMFCode, VarsTemplate: s.cfg.OVMFVars, Vars: filepath.Join(rec.Dir, "efivars.fd")}
	}
	return spec
}

func serialSocket(runDir string) string { return filepath.Join(runDir, "serial.sock") }

// seedISO is the container's cloud-init seed, attached as a read-only
// CD-ROM (virtio-scsi: Debian's cloud kernel has no SATA driver).
func seedISO(dir string) string { return filepath.Join(dir, "seed.iso") }

// buildSeed makes the cloud-init seed of a container: the pod's identity
// and hostname, the cloud-init annotations, the container's env and
// command, and its mounts and devices.
func buildSeed(sb *sandbox, sbCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig, m guestMounts) (cloudinit.Seed, error) {
	ann := map[string]string{}
	for k, v := range sbCfg.GetAnnotations() {
		ann[k] = v
	}
	for k, v := range cfg.GetAnnotations() {
		ann[k] = v
	}
	hostname := podHostname(sbCfg)
	in := cloudinit.Input{
		// Stable per pod UID: a new pod (new UID) is a new instance, a
		// restarted container of the same pod is not.
		InstanceID:  sb.config.GetMetadata().GetUid(),
		Hostname:    hostname,
		Annotations: ann,
		Command:     append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...),
		Files:       m.files,
		Shares:      m.shares,
		Devices:     m.devices,
	}
	for _, kv := range cfg.GetEnvs() {
		in.Env = append(in.Env, [2]string{kv.GetKey(), string(kv.GetValue())})
	}
	if att := sandboxNetwork(sb.rec); att != nil {
		in.NICs = cloudInitNICs(att)
	}
	if d := sbCfg.GetDnsConfig(); d != nil {
		in.DNS = &cloudinit.DNS{Servers: d.GetServers(), Searches: d.GetSearches(), Options: d.GetOptions()}
	}
	seed, err := cloudinit.Build(in)
	if err != nil {
		return cloudinit.Seed{}, fmt.Errorf("cloud-init seed: %w", err)
	}
	return seed, nil
}

// destroyContainerResources removes everything a container owns outside
// the metadata store: the domain (stopped first), its disks and sockets.
// Missing pieces are fine, so it finishes a half-done removal.
func (s *Service) destroyContainerResources(ctx context.Context, rec containerRecord) error {
	if err := s.libvirt.Destroy(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy domain %s: %w", rec.Domain, err)
	}
	if err := s.libvirt.Undefine(ctx, rec.Domain); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("undefine domain %s: %w", rec.Domain, err)
	}
	for _, d := range []string{rec.Dir, rec.RunDir} {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove %s: %w", d, err)
		}
	}
	return nil
}
