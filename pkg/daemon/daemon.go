// Package daemon assembles and runs `vmpod serve`: it locks the state
// directory and the socket, opens the metadata and image stores, connects to
// libvirt, serves the CRI on the unix socket, opens the readiness gate once
// state is recovered, and shuts down gracefully.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/cgroups"
	"github.com/vmpod/vmpod/pkg/cni"
	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/console"
	"github.com/vmpod/vmpod/pkg/cri"
	"github.com/vmpod/vmpod/pkg/guest"
	"github.com/vmpod/vmpod/pkg/image"
	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/image/transfer"
	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/libvirttools"
	"github.com/vmpod/vmpod/pkg/lifecycle"
	"github.com/vmpod/vmpod/pkg/metrics"
	"github.com/vmpod/vmpod/pkg/store"
	"github.com/vmpod/vmpod/pkg/version"
	"github.com/vmpod/vmpod/pkg/volumes"
)

// maxMsgSize matches the kubelet's CRI client limit (16 MiB).
const maxMsgSize = 16 << 20

// Run serves the CRI until ctx is cancelled (SIGTERM/SIGINT in main), then
// shuts down gracefully: new calls are refused, in-flight calls get up to
// cfg.ShutdownTimeout to finish and are cancelled after that.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) (retErr error) {
	log.Info("starting vmpod", "version", version.Version, "socket", cfg.Socket, "state_dir", cfg.StateDir, "libvirt_uri", cfg.LibvirtURI)
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	stateLock, err := acquireLock(filepath.Join(cfg.StateDir, "vmpod.lock"), "state directory "+cfg.StateDir)
	if err != nil {
		return err
	}
	defer stateLock.release()
	sockLock, err := acquireLock(cfg.Socket+".lock", "socket "+cfg.Socket)
	if err != nil {
		return err
	}
	defer sockLock.release()

	meta, err := store.Open(filepath.Join(cfg.StateDir, "metadata.db"))
	if err != nil {
		return err
	}
	defer meta.Close()

	reg := metrics.New()
	images, err := image.Open(image.Options{
		Dir:        filepath.Join(cfg.StateDir, "images"),
		Meta:       meta,
		Translator: imagetranslation.New(cfg.ImageTranslationsDir, log),
		Checker: image.Checker{
			CPUSeconds:  cfg.ImageCheckCPUSeconds,
			MemoryBytes: int64(cfg.ImageCheckMemoryMiB) << 20,
		},
		Checkpoints:      lifecycle.CheckpointImageChecker(&cfg),
		ProgressInterval: cfg.PullProgressInterval.Std(),
		OCI:              oci.Options{RegistriesConf: cfg.RegistriesConf},
		Log:              log,
		Downloaded:       reg.AddImagePullBytes,
		Limits: transfer.Limits{
			MaxImageSize:   cfg.MaxImageSize.Bytes(),
			RequestTimeout: cfg.PullRequestTimeout.Std(),
			StallTimeout:   cfg.PullStallTimeout.Std(),
		},
	})
	if err != nil {
		return fmt.Errorf("open image store: %w", err)
	}

	// Events come from libvirt's event loop; every call has a deadline.
	conn := libvirttools.NewPair(cfg.LibvirtURI, libvirttools.Options{
		CallTimeout: cfg.LibvirtCallTimeout.Std(), Events: true, Log: log.With("component", "libvirt"),
	})
	defer conn.Close()
	if info, err := conn.Ping(ctx); err != nil {
		log.Warn("libvirt is not reachable yet; the runtime reports not ready until it is", "err", err)
	} else {
		log.Info("connected to libvirt", "uri", info.URI, "libvirt_version", info.LibvirtVersion, "hypervisor", info.Hypervisor)
	}

	var problems []string
	for _, msg := range []string{checkKVMAccess(), checkStateDirReachable(cfg.StateDir)} {
		if msg != "" {
			log.Warn("host check: " + msg)
			problems = append(problems, msg)
		}
	}
	network := cni.NewManager(cni.Config{
		ConfDir: cfg.CNIConfDir, BinDirs: cfg.CNIBinDirList(), CacheDir: filepath.Join(cfg.StateDir, "cni"),
		Timeout: cfg.CNITimeout.Std(),
	}, log.With("component", "network"))
	// "auto" accelerators are decided once, here.
	kvm := kvmUsable()
	cfg = cfg.ResolveAccelerators(kvm)
	log.Info("accelerator resolved", "kvm_usable", kvm, "accelerator", cfg.Accelerator)
	roVirtiofsd, err := volumes.InstallReadOnlyVirtiofsd(filepath.Join(cfg.StateDir, "bin"))
	if err != nil {
		log.Warn("read-only virtiofs shares are refused: cannot install their virtiofsd", "err", err)
	}
	// VMs of pods with a cgroup_parent run in their pods' cgroups.
	var podCgroups lifecycle.Cgroups
	host, cgErr := cgroups.Open(cgroups.Options{Driver: cfg.CgroupDriver})
	if cgErr != nil {
		log.Warn("the node's cgroups cannot be used: pods with a cgroup_parent (every pod the kubelet runs) are refused", "err", cgErr)
	} else {
		podCgroups = host
		log.Info("cgroups", "mode", host.Mode(), "driver", host.Driver())
	}
	pods := lifecycle.New(lifecycle.Options{
		Config: cfg, Images: images, Libvirt: conn, Meta: meta, Log: log, Network: network,
		NewConsole: newConsole, HostCheck: strings.Join(problems, "; "), Metrics: reg,
		ReadOnlyVirtiofsd: roVirtiofsd, Cgroups: podCgroups, CgroupsErr: cgErr,
	})
	svc := cri.NewService(cri.Options{Config: cfg, Pods: pods, Images: images, Log: log, Metrics: reg})
	stopStreaming, err := svc.StartStreaming(cfg.StreamingAddress)
	if err != nil {
		return err
	}
	defer stopStreaming()
	gate := cri.NewGate()
	ic := &cri.Interceptors{Log: log, Gate: gate, Metrics: reg}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(ic.Unary),
		grpc.StreamInterceptor(ic.Stream),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, svc)
	runtimeapi.RegisterImageServiceServer(srv, svc)

	lis, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	log.Info("serving CRI", "socket", cfg.Socket)
	if cfg.MetricsAddress != "" {
		ms, err := reg.Serve(cfg.MetricsAddress, log)
		if err != nil {
			srv.Stop()
			return err
		}
		defer shutdownMetrics(ms, log)
		log.Info("serving metrics", "address", ms.Addr(), "url", "http://"+ms.Addr()+"/metrics")
	}

	if err := pods.Recover(ctx); err != nil {
		srv.Stop()
		if ctx.Err() != nil {
			log.Info("vmpod stopped before recovery finished")
			return nil
		}
		return fmt.Errorf("recover state: %w", err)
	}
	images.SetInUse(pods.ImageDiskInUse)
	if err := images.RemoveUnreferenced(); err != nil {
		log.Warn("clean unreferenced image files", "err", err)
	}
	monitorCtx, stopMonitor := context.WithCancel(context.Background())
	defer stopMonitor()
	go pods.Monitor(monitorCtx)
	go pods.CollectStats(monitorCtx)
	gate.Open()
	log.Info("vmpod ready")

	select {
	case err := <-serveErr:
		return fmt.Errorf("CRI server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: waiting for in-flight calls", "timeout", cfg.ShutdownTimeout.Std())
	// Event streams never end by themselves: end them, or GracefulStop
	// would wait for the kubelet's subscription until the timeout.
	svc.CloseEventStreams()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.ShutdownTimeout.Std()):
		log.Warn("in-flight calls did not finish in time; cancelling them")
		srv.Stop()
		<-stopped
	}
	log.Info("vmpod stopped")
	return nil
}

// shutdownMetrics stops the metrics server, giving a scrape in progress a
// few seconds.
func shutdownMetrics(ms *metrics.Server, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ms.Shutdown(ctx); err != nil {
		log.Warn("stop metrics server", "err", err)
	}
}

// newConsole starts a VM's serial console reader, with the output streams
// of its container's command.
func newConsole(spec lifecycle.ConsoleSpec, log *slog.Logger) (lifecycle.ConsoleHandle, error) {
	opts := console.Options{SocketPath: spec.Socket, LogPath: spec.LogPath, Logger: log}
	if spec.Stdout != "" {
		opts.Streams = []console.StreamOptions{
			{Name: "stdout", SocketPath: spec.Stdout, Filter: guest.NewOutputFilter(spec.Nonce)},
			{Name: "stderr", SocketPath: spec.Stderr, Filter: guest.NewOutputFilter(spec.Nonce)},
		}
	}
	c, err := console.Start(opts)
	if err != nil {
		return nil, err
	}
	return consoleAdapter{c}, nil
}

// consoleAdapter returns the Subscription as an io.ReadCloser.
type consoleAdapter struct{ *console.Console }

func (a consoleAdapter) Subscribe() (io.ReadCloser, error) { return a.Console.Subscribe() }

// listen creates the unix socket with mode 0660, replacing a stale socket
// left by a crashed daemon (the socket lock proves nobody serves it).
func listen(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another --socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}
