package lifecycle

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodHostname(t *testing.T) {
	long := "create-PodSandbox-for-container-2d17087f-7c91-42c5-8931-c8128c515309"
	for _, tc := range []struct {
		hostname, name, want string
	}{
		{"web-0", "ignored", "web-0"},
		{"", "pod-a", "pod-a"},
		// Cut to 63 like the kubelet cuts a pod name (critest's names are
		// longer); a cut that ends in '-' or '.' loses them.
		{"", long, long[:63]},
		{"", strings.Repeat("a", 61) + "-.b", strings.Repeat("a", 61)},
		{strings.Repeat("h", 70), "x", strings.Repeat("h", 63)},
	} {
		cfg := &runtimeapi.PodSandboxConfig{
			Hostname: tc.hostname,
			Metadata: &runtimeapi.PodSandboxMetadata{Name: tc.name},
		}
		if got := podHostname(cfg); got != tc.want {
			t.Errorf("podHostname(%q, %q) = %q, want %q", tc.hostname, tc.name, got, tc.want)
		}
	}
}
