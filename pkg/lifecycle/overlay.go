package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"

	"github.com/containerd/errdefs"
)

// OverlayMaker creates a VM's root disk: a qcow2 overlay whose read-only
// backing file is the pulled image (never a copy).
type OverlayMaker interface {
	// Create makes path as a qcow2 overlay over backing (of backingFormat),
	// with virtual size sizeBytes when it is above 0 (growing the disk).
	Create(ctx context.Context, path, backing, backingFormat string, sizeBytes int64) error
	// Adopt makes path, a qcow2 overlay from elsewhere (a checkpoint
	// archive), an overlay over backing: its backing file pointer is
	// rewritten without reading either file's data, then the file must be
	// a plain qcow2 (no data file, not encrypted) whose only backing file
	// is backing.
	Adopt(ctx context.Context, path, backing, backingFormat string) error
}

// QemuImg makes overlays with `qemu-img create`.
type QemuImg struct{}

// Create implements OverlayMaker.
func (QemuImg) Create(ctx context.Context, path, backing, backingFormat string, sizeBytes int64) error {
	args := []string{"create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path}
	if sizeBytes > 0 {
		args = append(args, strconv.FormatInt(sizeBytes, 10))
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-img create overlay: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// Adopt implements OverlayMaker with `qemu-img rebase -u` and `qemu-img
// info`, each told the format (never probing).
func (QemuImg) Adopt(ctx context.Context, path, backing, backingFormat string) error {
	run := func(args ...string) ([]byte, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "qemu-img", args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("qemu-img %s: %v: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), nil
	}
	if _, err := run("rebase", "-q", "-u", "-f", "qcow2", "-F", backingFormat, "-b", backing, path); err != nil {
		return fmt.Errorf("the checkpoint's root disk is not a qcow2 overlay vmpod can use: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	out, err := run("info", "-f", "qcow2", "--output=json", path)
	if err != nil {
		return fmt.Errorf("the checkpoint's root disk: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var info struct {
		Format      string `json:"format"`
		Encrypted   bool   `json:"encrypted"`
		FullBacking string `json:"full-backing-filename"`
		Specific    struct {
			Data struct {
				DataFile string `json:"data-file"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("parse qemu-img info: %w", err)
	}
	if info.Format != "qcow2" || info.Encrypted || info.Specific.Data.DataFile != "" || info.FullBacking != backing {
		return fmt.Errorf("the checkpoint's root disk is not a plain qcow2 overlay of %s (format %q, encrypted %v, data file %q, backing %q): %w",
			backing, info.Format, info.Encrypted, info.Specific.Data.DataFile, info.FullBacking, errdefs.ErrInvalidArgument)
	}
	return nil
}
