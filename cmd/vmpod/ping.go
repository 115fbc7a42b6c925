package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/config"
)

// newPingCommand is the health check of the DaemonSet's readiness probe: a
// CRI Version call, without needing crictl in the image.
func newPingCommand() *cobra.Command {
	var socket string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ping",
		Short: "Call CRI Version on a socket; exit 0 when it answers, 1 otherwise",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			target := socket
			if !strings.HasPrefix(target, "unix://") {
				target = "unix://" + target
			}
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			v, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
			if err != nil {
				return fmt.Errorf("CRI Version on %s: %w", target, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (CRI %s) on %s\n", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion, target)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", config.Default().Socket, "CRI socket to call (a path or unix:// URL)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
