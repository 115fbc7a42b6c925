package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/qcow2"
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

// Checker inspects a downloaded file and accepts it only if it is a
// complete, self-contained qcow2 image or a raw disk image.
type Checker struct {
	// QemuImg is the qemu-img binary; default "qemu-img".
	QemuImg string
	// CPUSeconds and MemoryBytes bound each qemu-img process (a crafted
	// image must not make the probe eat the node), as KubeVirt does.
	CPUSeconds  int
	MemoryBytes int64
}

// Check decides the file's format from its first bytes, in process: qcow2
// by its magic, then walked table by table (pkg/image/qcow2: complete,
// no backing or data file, not encrypted); anything else is raw, unless
// it starts like another image format or a compressed file. Only then
// does qemu-img see it, always told the format with -f (never probing):
// `qemu-img info` for the sizes and, for qcow2, `qemu-img check` for the
// consistency of the refcounts, each under the CPU-time and address-space
// limits. Errors wrap errdefs.ErrInvalidArgument and say why the file was
// refused.
func (c Checker) Check(ctx context.Context, path string) (DiskInfo, error) {
	format, err := detectFormat(path)
	if err != nil {
		return DiskInfo{}, err
	}
	var stdout bytes.Buffer
	if err := c.run(ctx, &stdout, "info", "-f", format, "--output=json", path); err != nil {
		return DiskInfo{}, fmt.Errorf("qemu-img info could not read the file as %s: %w", format, err)
	}
	var info DiskInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return DiskInfo{}, fmt.Errorf("parse qemu-img info output: %w", err)
	}
	if info.Format != format {
		return DiskInfo{}, fmt.Errorf("qemu-img info reports format %q for a file read as %s: %w", info.Format, format, errdefs.ErrInvalidArgument)
	}
	if err := validate(info); err != nil {
		return DiskInfo{}, err
	}
	if format == "qcow2" {
		if err := c.consistent(ctx, path); err != nil {
			return DiskInfo{}, err
		}
	}
	return info, nil
}

// run runs qemu-img with args under the limits; a failure is
// InvalidArgument with qemu-img's message.
func (c Checker) run(ctx context.Context, stdout *bytes.Buffer, args ...string) error {
	qemuImg := c.QemuImg
	if qemuImg == "" {
		qemuImg = "qemu-img"
	}
	// prlimit (util-linux) lowers the limits for the child only; lowering
	// needs no privilege.
	cmd := exec.CommandContext(ctx, "prlimit",
		append([]string{"--cpu=" + strconv.Itoa(c.CPUSeconds), "--as=" + strconv.FormatInt(c.MemoryBytes, 10), qemuImg}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &qemuImgError{err: err, stderr: string(bytes.TrimSpace(stderr.Bytes()))}
}

type qemuImgError struct {
	err    error
	stderr string
}

func (e *qemuImgError) Error() string   { return fmt.Sprintf("%v: %s", e.err, e.stderr) }
func (e *qemuImgError) Unwrap() []error { return []error{e.err, errdefs.ErrInvalidArgument} }

// exitCode is qemu-img's exit status, or -1.
func (e *qemuImgError) exitCode() int {
	var ee *exec.ExitError
	if errors.As(e.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// consistent runs `qemu-img check -f qcow2`: corruptions (exit 2) or a
// check that could not complete (exit 1) refuse the image; leaked
// clusters (exit 3) only waste space and are accepted.
func (c Checker) consistent(ctx context.Context, path string) error {
	var stdout bytes.Buffer
	err := c.run(ctx, &stdout, "check", "-f", "qcow2", "--output=json", path)
	var qe *qemuImgError
	if err == nil || (errors.As(err, &qe) && qe.exitCode() == 3) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var res struct {
		Corruptions int `json:"corruptions"`
		CheckErrors int `json:"check-errors"`
	}
	_ = json.Unmarshal(stdout.Bytes(), &res)
	return fmt.Errorf("qemu-img check found the qcow2 image inconsistent (%d corruptions, %d check errors; %v); repair it with 'qemu-img check -r all' before publishing it: %w",
		res.Corruptions, res.CheckErrors, err, errdefs.ErrInvalidArgument)
}

// otherFormats are magic numbers of files that are not disks vmpod boots,
// with the advice for each.
var otherFormats = []struct {
	off   int
	magic string
	what  string
}{
	{0, "KDMV", "a VMDK image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "vhdxfile", "a VHDX image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "conectix", "a VHD image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "QED\x00", "a QED image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "WithoutFreeSpace", "a Parallels image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "WithouFreSpacExt", "a Parallels image; convert it with 'qemu-img convert -O qcow2'"},
	{0x40, "\x7f\x10\xda\xbe", "a VDI image; convert it with 'qemu-img convert -O qcow2'"},
	{0, "LUKS\xba\xbe", "a LUKS-encrypted image; vmpod has no key to open it"},
	{0, "\x1f\x8b", "gzip-compressed; publish the uncompressed image (or a qcow2 with compressed clusters)"},
	{0, "\xfd7zXZ\x00", "xz-compressed; publish the uncompressed image (or a qcow2 with compressed clusters)"},
	{0, "\x28\xb5\x2f\xfd", "zstd-compressed; publish the uncompressed image (or a qcow2 with compressed clusters)"},
	{0, "BZh", "bzip2-compressed; publish the uncompressed image (or a qcow2 with compressed clusters)"},
}

// detectFormat reads the start of path and returns "qcow2" (after walking
// its tables) or "raw" (after the raw checks), or an error saying what the
// file is instead.
func detectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", err
	}
	head = head[:n]
	if qcow2.HasMagic(head) {
		h, err := qcow2.Check(f, st.Size())
		if err != nil {
			return "", fmt.Errorf("the file is not a complete qcow2 image: %w", err)
		}
		return "qcow2", h.SelfContained()
	}
	for _, o := range otherFormats {
		if len(head) >= o.off+len(o.magic) && string(head[o.off:o.off+len(o.magic)]) == o.magic {
			return "", fmt.Errorf("the file is %s; vmpod boots qcow2 and raw disk images only: %w", o.what, errdefs.ErrInvalidArgument)
		}
	}
	return "raw", checkRaw(head, st.Size())
}

// validate checks what qemu-img info reports, whatever the in-process
// checks found.
func validate(info DiskInfo) error {
	switch {
	case info.Backing != "" || info.FullBacking != "":
		return fmt.Errorf("image has a backing file %q; images that refer to other files are refused because the guest would read that host file: %w",
			info.Backing, errdefs.ErrInvalidArgument)
	case info.Specific.Data.DataFile != "":
		return fmt.Errorf("image has an external data file %q; images that refer to other files are refused: %w",
			info.Specific.Data.DataFile, errdefs.ErrInvalidArgument)
	case info.Encrypted:
		return fmt.Errorf("image is encrypted; vmpod has no key to open it: %w", errdefs.ErrInvalidArgument)
	case info.Format == "qcow2" || info.Format == "raw":
		return nil
	default:
		return fmt.Errorf("image format is %q; only qcow2 and raw disk images are accepted (convert with 'qemu-img convert -O qcow2'): %w",
			info.Format, errdefs.ErrInvalidArgument)
	}
}

// checkRaw weeds out files that would be "raw" only because every file is
// raw: a disk is a whole number of 512-byte sectors and does not start
// like a text or HTML document (an error page saved as an image). head is
// the file's first bytes (up to 512), size its size.
func checkRaw(head []byte, size int64) error {
	if size == 0 || size%512 != 0 {
		return fmt.Errorf("file is not a disk image: %d bytes is not a whole number of 512-byte sectors (and it is not qcow2): %w",
			size, errdefs.ErrInvalidArgument)
	}
	if ct := http.DetectContentType(head); ct != "application/octet-stream" {
		return fmt.Errorf("file is not a disk image: its content looks like %s: %w", ct, errdefs.ErrInvalidArgument)
	}
	return nil
}
