package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"

	"github.com/containerd/errdefs"
)

// DiskInfo is what `qemu-img info` reports about an image file.
type DiskInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	ActualSize  int64  `json:"actual-size"`
	Encrypted   bool   `json:"encrypted"`
	Backing     string `json:"backing-filename"`
	FullBacking string `json:"full-backing-filename"`
	Specific    struct {
		Type string `json:"type"`
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// Checker inspects a downloaded file and accepts it only if it is a qcow2 or
// raw disk image that refers to no other file.
type Checker struct {
	// QemuImg is the qemu-img binary; default "qemu-img".
	QemuImg string
	// CPUSeconds and MemoryBytes bound the qemu-img process (a crafted image
	// must not make the probe eat the node), as KubeVirt does.
	CPUSeconds  int
	MemoryBytes int64
}

// Check runs `qemu-img info --output=json` on path under resource limits and
// validates the result. Errors wrap errdefs.ErrInvalidArgument and say why
// the file was refused.
func (c Checker) Check(ctx context.Context, path string) (DiskInfo, error) {
	qemuImg := c.QemuImg
	if qemuImg == "" {
		qemuImg = "qemu-img"
	}
	// prlimit (util-linux) lowers the limits for the child only; lowering
	// needs no privilege.
	cmd := exec.CommandContext(ctx, "prlimit",
		"--cpu="+strconv.Itoa(c.CPUSeconds), "--as="+strconv.FormatInt(c.MemoryBytes, 10),
		qemuImg, "info", "--output=json", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return DiskInfo{}, ctx.Err()
		}
		return DiskInfo{}, fmt.Errorf("qemu-img info could not read the file (%v: %s); is it a disk image?: %w",
			err, bytes.TrimSpace(stderr.Bytes()), errdefs.ErrInvalidArgument)
	}
	var info DiskInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return DiskInfo{}, fmt.Errorf("parse qemu-img info output: %w", err)
	}
	if err := validate(info, path); err != nil {
		return DiskInfo{}, err
	}
	return info, nil
}

func validate(info DiskInfo, path string) error {
	switch {
	case info.Backing != "" || info.FullBacking != "":
		return fmt.Errorf("image has a backing file %q; images that refer to other files are refused because the guest would read that host file: %w",
			info.Backing, errdefs.ErrInvalidArgument)
	case info.Specific.Data.DataFile != "":
		return fmt.Errorf("image has an external data file %q; images that refer to other files are refused: %w",
			info.Specific.Data.DataFile, errdefs.ErrInvalidArgument)
	case info.Encrypted:
		return fmt.Errorf("image is encrypted; vmpod has no key to open it: %w", errdefs.ErrInvalidArgument)
	case info.Format == "qcow2":
		return nil
	case info.Format == "raw":
		return checkRaw(path)
	default:
		return fmt.Errorf("image format is %q; only qcow2 and raw disk images are accepted (convert with 'qemu-img convert -O qcow2'): %w",
			info.Format, errdefs.ErrInvalidArgument)
	}
}

// checkRaw weeds out files that qemu-img calls "raw" only because every file
// is raw to it: a disk is a whole number of 512-byte sectors and does not
// start like a text or HTML document (an error page saved as an image).
func checkRaw(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 || st.Size()%512 != 0 {
		return fmt.Errorf("file is not a disk image: %d bytes is not a whole number of 512-byte sectors (and it is not qcow2): %w",
			st.Size(), errdefs.ErrInvalidArgument)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return err
	}
	if ct := http.DetectContentType(head[:n]); ct != "application/octet-stream" {
		return fmt.Errorf("file is not a disk image: its content looks like %s: %w", ct, errdefs.ErrInvalidArgument)
	}
	return nil
}
