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

// DiskInfo is what the checks found out about an image file.
type DiskInfo struct {
	// Format is "qcow2" or "raw".
	Format string
	// VirtualSize is the size of the disk the guest sees: the qcow2
	// header's, or the raw file's size.
	VirtualSize int64
}

// Checker inspects a downloaded file and accepts it only if it is a
// complete, self-contained qcow2 image or a raw disk image.
type Checker struct {
	// QemuImg is the qemu-img binary; default "qemu-img".
	QemuImg string
	// CPUSeconds and MemoryBytes bound the qemu-img process (a crafted
	// image must not make the check eat the node), as KubeVirt does.
	CPUSeconds  int
	MemoryBytes int64
}

// Check decides the file's format from its first bytes, in process: qcow2
// by its magic, then walked table by table (pkg/image/qcow2: complete,
// no backing or data file, not encrypted, not marked dirty or corrupt),
// which gives its virtual size; anything else is raw, unless it starts
// like another image format or a compressed file. Only a qcow2 that
// passed all that is shown to QEMU: `qemu-img check -f qcow2` (the format
// given, never probed) opens it as QEMU will and checks the consistency
// of its refcounts, under the CPU-time and address-space limits. A raw
// file has nothing more to check. Errors wrap errdefs.ErrInvalidArgument
// and say why the file was refused.
func (c Checker) Check(ctx context.Context, path string) (DiskInfo, error) {
	info, err := inspect(path)
	if err != nil {
		return DiskInfo{}, err
	}
	if info.Format == "qcow2" {
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
// check that could not complete (exit 1: QEMU could not open the image,
// or met errors) refuse the image; leaked clusters (exit 3) only waste
// space and are accepted.
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
		Format      string `json:"format"`
		Corruptions int    `json:"corruptions"`
		CheckErrors int    `json:"check-errors"`
	}
	if json.Unmarshal(stdout.Bytes(), &res) != nil || res.Format == "" {
		// No report: QEMU did not get as far as checking.
		return fmt.Errorf("qemu-img could not open the file as a qcow2 image: %w", err)
	}
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

// inspect reads the start of path and returns its format and virtual
// size: a qcow2 after walking its tables and refusing it unless it is
// self-contained, a raw disk after the raw checks, or an error saying what
// the file is instead.
func inspect(path string) (DiskInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return DiskInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return DiskInfo{}, err
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return DiskInfo{}, err
	}
	head = head[:n]
	if qcow2.HasMagic(head) {
		h, err := qcow2.Check(f, st.Size())
		if err != nil {
			return DiskInfo{}, fmt.Errorf("the file is not a complete qcow2 image: %w", err)
		}
		if err := h.SelfContained(); err != nil {
			return DiskInfo{}, err
		}
		// Check refuses a virtual size above math.MaxInt64.
		return DiskInfo{Format: "qcow2", VirtualSize: int64(h.VirtualSize)}, nil
	}
	for _, o := range otherFormats {
		if len(head) >= o.off+len(o.magic) && string(head[o.off:o.off+len(o.magic)]) == o.magic {
			return DiskInfo{}, fmt.Errorf("the file is %s; vmpod boots qcow2 and raw disk images only: %w", o.what, errdefs.ErrInvalidArgument)
		}
	}
	if err := checkRaw(head, st.Size()); err != nil {
		return DiskInfo{}, err
	}
	return DiskInfo{Format: "raw", VirtualSize: st.Size()}, nil
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
