package lifecycle

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
)

// OverlayMaker creates a VM's root disk: a qcow2 overlay whose read-only
// backing file is the pulled image (never a copy).
type OverlayMaker interface {
	// Create makes path as a qcow2 overlay over backing (of backingFormat),
	// with virtual size sizeBytes when it is above 0 (growing the disk).
	Create(ctx context.Context, path, backing, backingFormat string, sizeBytes int64) error
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
