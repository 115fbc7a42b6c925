// Command vmpod is a Kubernetes container runtime (CRI) that runs every pod
// as a libvirt/QEMU virtual machine. `vmpod serve` runs the daemon, `vmpod
// router` the CRI router for nodes shared with another runtime, `vmpod ping`
// a CRI health check.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmpod/vmpod/pkg/config"
	"github.com/vmpod/vmpod/pkg/daemon"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/version"
	"github.com/vmpod/vmpod/pkg/volumes"
)

func main() {
	// libvirt runs vmpod as the virtiofsd of read-only shares.
	if filepath.Base(os.Args[0]) == volumes.ReadOnlyVirtiofsdName {
		err := volumes.RunReadOnlyVirtiofsd(os.Args[1:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vmpod:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "vmpod",
		Short:         "A Kubernetes CRI runtime that runs every pod as a libvirt/QEMU virtual machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newConfigCommand(), newVersionCommand(), newRouterCommand(), newPingCommand())
	return root
}

func newServeCommand() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the vmpod daemon (CRI server on a unix socket)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile == "" {
				configFile = os.Getenv("VMPOD_CONFIG")
			}
			cfg, err := config.Load(configFile, cmd.Flags())
			if err != nil {
				return err
			}
			log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return daemon.Run(ctx, cfg, log)
		},
	}
	d := config.Default()
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "configuration file (env VMPOD_CONFIG; default "+config.DefaultConfigFile+", whose absence means built-in defaults)")
	f.String("socket", d.Socket, "path of the CRI unix socket (env VMPOD_SOCKET)")
	f.String("state-dir", d.StateDir, "state directory (env VMPOD_STATE_DIR)")
	f.String("libvirt-uri", d.LibvirtURI, "libvirt connection URI (env VMPOD_LIBVIRT_URI)")
	f.String("log-level", d.LogLevel, "log level: debug, info, warn, error (env VMPOD_LOG_LEVEL)")
	f.String("metrics-address", d.MetricsAddress, "host:port of the Prometheus metrics endpoint, e.g. 127.0.0.1:9810; empty serves none (env VMPOD_METRICS_ADDRESS)")
	return cmd
}

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Configuration helpers"}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the complete default configuration, with a comment on every key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := config.DefaultTOML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	})
	return cmd
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print vmpod's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "vmpod %s (CRI %s)\n", version.Version, version.CRIVersion)
		},
	}
}
