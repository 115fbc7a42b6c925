// Package failpoint marks the steps of vmpod's operations where a crash
// must leave a state that start-up recovery and the kubelet's retries
// clean up. In a normal build Hit does nothing and is compiled away. A
// build with the tag "failpoints" (tests/e2e builds one) reads the file
// named by VMPOD_FAILPOINT_FILE at every Hit: when the file names the
// failpoint, the daemon removes the file and kills itself with SIGKILL,
// as a crash or an OOM kill would; "NAME pause" instead holds the step
// until the file is removed or changed, so a test can race another call
// against it.
package failpoint

// Points lists every failpoint, grouped by the operation that reaches it
// and in the order it does. A test checks that the list and the Hit calls
// in the source agree.
var Points = []string{
	// RunPodSandbox
	"runp/record-stored",
	"runp/netns-created",
	"runp/cni-added",
	"runp/result-stored",
	"runp/network-wired",
	"runp/ready",
	// CreateContainer
	"create/record-stored",
	"create/dir-created",
	"create/overlay-created",
	"create/seed-written",
	"create/domain-defined",
	"create/created",
	// StartContainer
	"start/taps-created",
	"start/cgroup-planned",
	"start/domain-started",
	"start/vm-placed",
	"start/vm-plugged",
	"start/console-connected",
	"start/resumed",
	"start/running",
	// The container's command, after StartContainer (its runner) and in
	// StopContainer ("signalled")
	"command/starting",
	"command/started",
	"command/signalled",
	"command/exit-seen",
	"command/exited",
	// StopContainer
	"stop/requested",
	"stop/shutdown-sent",
	"stop/destroyed",
	"stop/exited",
	// RemoveContainer (and any removal of a VM)
	"rm/domain-destroyed",
	"rm/domain-undefined",
	"rm/files-removed",
	"rm/record-removed",
	// StopPodSandbox
	"stopp/notready",
	"stopp/vm-stopped",
	"teardown/taps-deleted",
	"teardown/guard-removed",
	"teardown/cni-deleted",
	"teardown/netns-deleted",
	"stopp/network-down",
	// RemovePodSandbox
	"rmp/containers-removed",
	"rmp/record-removed",
	// PullImage
	"pull/downloaded",
	"pull/checked",
	"pull/placed",
	"pull/recorded",
}

// EnvFile is the environment variable naming the failpoint file.
const EnvFile = "VMPOD_FAILPOINT_FILE"
