package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmpod/vmpod/pkg/imagetranslation"
	"github.com/vmpod/vmpod/pkg/logging"
	"github.com/vmpod/vmpod/pkg/router"
)

func newRouterCommand() *cobra.Command {
	opts := router.Options{}
	var socket, translationsDir, logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run the CRI router for mixed nodes: VM pods (RuntimeClass handlers of vmpod) to vmpod, everything else to the primary runtime",
		Long: `Run the CRI router: the kubelet's runtime endpoint on nodes where vmpod runs next to
containerd (or another primary runtime). Pods whose RuntimeClass handler is one of
--vmpod-handlers go to vmpod, every other call to the primary runtime; list calls
merge both. See docs/router.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := logging.New(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			opts.Log = log
			if translationsDir != "" {
				opts.Translator = imagetranslation.New(translationsDir, log)
			}
			r, err := router.New(opts)
			if err != nil {
				return err
			}
			defer r.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return router.Serve(ctx, r, socket)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", router.DefaultSocket, "path of the router's CRI unix socket (the kubelet's containerRuntimeEndpoint)")
	f.StringVar(&opts.PrimaryEndpoint, "primary-endpoint", router.DefaultPrimaryEndpoint, "CRI endpoint of the node's primary runtime (containerd, CRI-O)")
	f.StringVar(&opts.VMPodEndpoint, "vmpod-endpoint", router.DefaultVMPodEndpoint, "CRI endpoint of vmpod")
	f.StringSliceVar(&opts.Handlers, "vmpod-handlers", []string{router.DefaultHandler}, "RuntimeClass handlers served by vmpod (comma-separated)")
	f.StringVar(&translationsDir, "image-translations-dir", "", "vmpod's image translation directory: image names a rule there matches go to vmpod (default none)")
	f.DurationVar(&opts.VMPodTimeout, "vmpod-timeout", router.DefaultVMPodTimeout, "bound on asking vmpod on the side of another call (merged lists, ID lookups)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error (debug logs every call)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}
