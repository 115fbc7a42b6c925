package image

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmpod/vmpod/pkg/image/oci"
	"github.com/vmpod/vmpod/pkg/logging"
)

// FormatCheckpoint is the Format of a checkpoint image: its file is a
// vmpod checkpoint archive (docs/snapshots.md), which a CreateContainer
// naming the image restores.
const FormatCheckpoint = "checkpoint"

// CheckpointBase is the image a checkpoint archive's root disk is an
// overlay of.
type CheckpointBase struct {
	// ID is the image ID the archive names.
	ID string `json:"id"`
	// Names are names that image can be pulled by, as the checkpointed
	// container's node knew them (repo digests first).
	Names []string `json:"names"`
}

// CheckpointChecker verifies a pulled checkpoint archive (every member
// against its manifest, within the limits a restore applies) and returns
// its base image. Errors wrap errdefs.ErrInvalidArgument with the reason.
type CheckpointChecker func(ctx context.Context, path string) (CheckpointBase, error)

// maxBaseNames bounds the names of a base image tried.
const maxBaseNames = 4

// basePullKey marks the context of a base image's pull.
type basePullKey struct{}

// checkCheckpoint verifies a pulled checkpoint archive and pulls its base
// image with the same credentials (pullBase), scoped to the registry of
// the checkpoint image name (fully qualified).
func (s *Store) checkCheckpoint(ctx context.Context, name, path string, auth *oci.Auth) (*CheckpointBase, error) {
	if s.opts.Checkpoints == nil {
		return nil, fmt.Errorf("it is a checkpoint image, which this vmpod does not restore: %w", errdefs.ErrFailedPrecondition)
	}
	base, err := s.opts.Checkpoints(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("the checkpoint archive: %w", err)
	}
	if err := s.pullBase(ctx, name, base, auth); err != nil {
		return nil, err
	}
	return &base, nil
}

// scopeAuth pins credentials that name no registry to the registry of
// the image they came with (name, fully qualified, as pulled): a base
// image an archive names in another registry is pulled without them, so
// an archive cannot send a pull secret to a registry of its choosing.
func scopeAuth(auth *oci.Auth, name string) *oci.Auth {
	if auth == nil || auth.ServerAddress != "" {
		return auth
	}
	a := *auth
	a.ServerAddress, _, _ = strings.Cut(name, "/")
	return &a
}

// pullBase pulls the base image of checkpoint image name (fully
// qualified) by one of its names, with the credentials of the
// checkpoint's pull (for the checkpoint's registry only: scopeAuth), and
// requires the image ID the archive names. A checkpoint image pulled as
// another's base is refused. A restore backs the VM's disk with that image: the pull
// shows that whoever pulls the checkpoint may pull its base image too,
// so an archive (whose metadata anyone can write) cannot name another
// tenant's private image already on the node. The kubelet's measures for
// images already on a node (AlwaysPullImages, ensured secret pulls) apply
// to the checkpoint image, and through this pull to its base.
func (s *Store) pullBase(ctx context.Context, name string, base CheckpointBase, auth *oci.Auth) error {
	if ctx.Value(basePullKey{}) != nil {
		return fmt.Errorf("the base image of a checkpoint is itself a checkpoint image: %w", errdefs.ErrInvalidArgument)
	}
	auth = scopeAuth(auth, name)
	names := base.Names
	if len(names) > maxBaseNames {
		names = names[:maxBaseNames]
	}
	if len(names) == 0 {
		return fmt.Errorf("the checkpoint archive names no pullable name of its base image %s: %w", base.ID, errdefs.ErrInvalidArgument)
	}
	ctx = context.WithValue(ctx, basePullKey{}, true)
	var errs []error
	for _, n := range names {
		img, err := s.Pull(ctx, n, auth)
		switch {
		case err != nil:
			errs = append(errs, err)
		case img.ID != base.ID:
			errs = append(errs, fmt.Errorf("%s is now image %s: %w", n, img.ID, errdefs.ErrFailedPrecondition))
		default:
			logging.From(ctx).Info("checkpoint image: its base image pulled", "base", n, "id", img.ID)
			return nil
		}
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	// The first failure's class: what the user has to fix (credentials,
	// a moved tag).
	var class error = errdefs.ErrFailedPrecondition
	for _, c := range []error{errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied, errdefs.ErrNotFound, errdefs.ErrUnavailable, errdefs.ErrInvalidArgument} {
		if errors.Is(errs[0], c) {
			class = c
			break
		}
	}
	return fmt.Errorf("the checkpoint's base image %s could not be pulled with this pull's credentials (%s): %w",
		base.ID, strings.Join(msgs, "; "), class)
}
