package cloudinit

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// genisoimage is the ISO writer; a variable so tests can point elsewhere.
var genisoimage = "genisoimage"

// WriteISO writes seed as an ISO 9660 image (Rock Ridge and Joliet, volume
// label seed.Label) at path, mode 0600 (a seed carries secrets), replacing
// it atomically. It runs
// genisoimage (Debian package genisoimage) on a temporary directory, as
// KubeVirt and Virtlet do for their seeds: the kernel's iso9660 driver reads
// file names like "meta-data" only through those extensions.
func WriteISO(ctx context.Context, seed Seed, path string) (retErr error) {
	if seed.Label == "" {
		return fmt.Errorf("write cloud-init ISO %s: seed has no volume label", path)
	}
	dir := filepath.Dir(path)
	src, err := os.MkdirTemp(dir, ".cloudinit-src-")
	if err != nil {
		return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
	}
	defer os.RemoveAll(src)
	// -rock records the source's modes; give the ISO's root the usual 0755.
	if err := os.Chmod(src, 0o755); err != nil {
		return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
	}
	for _, name := range slices.Sorted(maps.Keys(seed.Files)) {
		clean := filepath.Clean(filepath.FromSlash(name))
		if filepath.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("write cloud-init ISO %s: file name %q is not a relative path inside the ISO", path, name)
		}
		p := filepath.Join(src, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
		}
		if err := os.WriteFile(p, seed.Files[name], 0o644); err != nil {
			return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
		}
	}

	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	defer func() {
		if retErr != nil {
			os.Remove(tmp)
		}
	}()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, genisoimage,
		"-quiet", "-input-charset", "utf-8",
		"-output", tmp, "-volid", seed.Label, "-joliet", "-rock", src)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("write cloud-init ISO %s: genisoimage: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write cloud-init ISO %s: %w", path, err)
	}
	return nil
}
