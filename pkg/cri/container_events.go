package cri

import (
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/logging"
)

// GetContainerEvents streams container and sandbox lifecycle events (the
// kubelet's Evented PLEG) until the client goes away, the client falls
// too far behind (ResourceExhausted) or vmpod shuts down (Unavailable).
func (s *Service) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	ctx := stream.Context()
	sub, err := s.pods.Subscribe()
	if err != nil {
		return err
	}
	defer sub.Close()
	logging.From(ctx).Info("container event subscriber connected", "subscribers", s.pods.Subscribers())

	// One goroutine sends, so that this handler can return while a Send is
	// blocked by a client that stopped reading: returning ends the stream,
	// which unblocks the Send.
	sendErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case ev := <-sub.C():
				if err := stream.Send(containerEvent(ev)); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()
	select {
	case <-ctx.Done():
		return nil // the client went away
	case <-sub.Done():
		return sub.Err()
	case err := <-sendErr:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}
