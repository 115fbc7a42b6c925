package cri

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vmpod/vmpod/pkg/lifecycle"
)

// eventTypes maps the lifecycle's event types to the CRI's.
var eventTypes = map[lifecycle.EventType]runtimeapi.ContainerEventType{
	lifecycle.EventCreated: runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
	lifecycle.EventStarted: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
	lifecycle.EventStopped: runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
	lifecycle.EventDeleted: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
}

// containerEvent is a lifecycle event as the CRI sends it: the sandbox's
// status exactly as PodSandboxStatus reports it (the kubelet takes the
// pod's IPs from the event), NOTREADY once the sandbox is removed, and the
// statuses of the pod's containers (lifecycle/events.go says what triggers
// each event).
func containerEvent(ev lifecycle.Event) *runtimeapi.ContainerEventResponse {
	resp := &runtimeapi.ContainerEventResponse{
		ContainerId:        ev.ID,
		ContainerEventType: eventTypes[ev.Type],
		CreatedAt:          ev.At,
	}
	if ev.Sandbox != nil {
		resp.PodSandboxStatus = sandboxStatus(*ev.Sandbox)
		if ev.SandboxGone {
			resp.PodSandboxStatus.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
	}
	for _, c := range ev.Containers {
		resp.ContainersStatuses = append(resp.ContainersStatuses, containerStatus(c))
	}
	return resp
}
