package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		info DiskInfo
		want string
	}{
		{"qcow2 ok", DiskInfo{Format: "qcow2"}, ""},
		{"backing", DiskInfo{Format: "qcow2", Backing: "/etc/shadow"}, "backing file"},
		{"data file", func() DiskInfo { d := DiskInfo{Format: "qcow2"}; d.Specific.Data.DataFile = "/dev/sda"; return d }(), "data file"},
		{"encrypted", DiskInfo{Format: "qcow2", Encrypted: true}, "encrypted"},
		{"vmdk", DiskInfo{Format: "vmdk"}, "only qcow2 and raw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.info, "/nonexistent")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
