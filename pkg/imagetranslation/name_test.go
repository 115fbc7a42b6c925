package imagetranslation

import (
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name string
		want imageName
	}{
		{"cirros", imageName{full: "cirros", repo: "cirros"}},
		{"cirros:0.6.2", imageName{full: "cirros:0.6.2", repo: "cirros", tagged: true}},
		{"vms/ubuntu:22.04", imageName{full: "vms/ubuntu:22.04", repo: "vms/ubuntu", tagged: true}},
		{"host:5000/x", imageName{full: "host:5000/x", repo: "host:5000/x"}},
		{"host:5000/x:1", imageName{full: "host:5000/x:1", repo: "host:5000/x", tagged: true}},
		{"cirros@" + digest, imageName{full: "cirros", repo: "cirros", digest: digest}},
		{"cirros:1@" + digest, imageName{full: "cirros:1", repo: "cirros", tagged: true, digest: digest}},
		// Not a sha256 digest: left as it is.
		{"cirros@sha256:abc", imageName{full: "cirros@sha256:abc", repo: "cirros@sha256", tagged: true}},
		{"cirros@sha256:" + strings.Repeat("AB", 32), imageName{full: "cirros@sha256:" + strings.Repeat("AB", 32), repo: "cirros@sha256", tagged: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseName(tt.name); got != tt.want {
				t.Errorf("parseName(%q) = %+v, want %+v", tt.name, got, tt.want)
			}
		})
	}
}
