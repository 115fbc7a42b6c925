package oci

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// candidates returns the fully-qualified references name may be pulled
// from, in the order to try them, each with a tag or a digest (never both).
//
// Short names are resolved like containers/image's pkg/shortnames does,
// minus its prompt: that package asks on the terminal when stdin and
// stdout are TTYs, which a daemon started from a shell would do in the
// middle of a pull. Here an alias wins; a single unqualified-search
// registry is used; several are tried in order unless short-name-mode is
// "enforcing", which rejects the name as ambiguous.
func candidates(sys *types.SystemContext, name, confDesc string) ([]reference.Named, error) {
	if name == "" {
		return nil, fmt.Errorf("empty image name: %w", errdefs.ErrInvalidArgument)
	}
	parsed, err := reference.Parse(name)
	if err != nil {
		return nil, fmt.Errorf("image name %q is not a valid reference: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	named, ok := parsed.(reference.Named)
	if !ok {
		return nil, fmt.Errorf("image name %q has no repository: %w", name, errdefs.ErrInvalidArgument)
	}
	if !isShortName(named) {
		full, err := reference.ParseNormalizedNamed(name)
		if err != nil {
			return nil, fmt.Errorf("image name %q is not a valid reference: %v: %w", name, err, errdefs.ErrInvalidArgument)
		}
		n, err := pinned(full, named)
		if err != nil {
			return nil, err
		}
		return []reference.Named{n}, nil
	}

	short := reference.TrimNamed(named).String()
	alias, origin, err := sysregistriesv2.ResolveShortNameAlias(sys, short)
	if err != nil {
		return nil, fmt.Errorf("resolve short name %q with %s: %v: %w", name, confDesc, err, errdefs.ErrFailedPrecondition)
	}
	if alias != nil {
		n, err := pinned(alias, named)
		if err != nil {
			return nil, fmt.Errorf("short name %q: alias in %s: %w", name, origin, err)
		}
		return []reference.Named{n}, nil
	}
	regs, origin, err := sysregistriesv2.UnqualifiedSearchRegistriesWithOrigin(sys)
	if err != nil {
		return nil, fmt.Errorf("resolve short name %q with %s: %v: %w", name, confDesc, err, errdefs.ErrFailedPrecondition)
	}
	if len(regs) == 0 {
		return nil, fmt.Errorf("short name %q: %s has no alias for it and no unqualified-search-registries; "+
			"use a fully-qualified name such as registry.example.com/%s: %w", name, confDesc, name, errdefs.ErrInvalidArgument)
	}
	var out []reference.Named
	for _, reg := range regs {
		full, err := reference.ParseNormalizedNamed(reg + "/" + short)
		if err != nil {
			return nil, fmt.Errorf("short name %q with unqualified-search registry %q from %s: %v: %w", name, reg, origin, err, errdefs.ErrInvalidArgument)
		}
		n, err := pinned(full, named)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) > 1 {
		mode, err := sysregistriesv2.GetShortNameMode(sys)
		if err != nil {
			return nil, fmt.Errorf("read short-name-mode from %s: %v: %w", confDesc, err, errdefs.ErrFailedPrecondition)
		}
		if mode == types.ShortNameModeEnforcing {
			return nil, fmt.Errorf("short name %q is ambiguous: it may mean any of %s (unqualified-search-registries in %s, short-name-mode = \"enforcing\"); "+
				"use a fully-qualified name or add an [aliases] entry for %q: %w", name, namesString(out), origin, short, errdefs.ErrInvalidArgument)
		}
	}
	return out, nil
}

// isShortName reports whether named (parsed without normalisation) lacks a
// registry: its first component has no '.' or ':' and is not "localhost",
// the rule of docker and containers/image.
func isShortName(named reference.Named) bool {
	first, _, ok := strings.Cut(named.Name(), "/")
	if !ok {
		return true
	}
	return !strings.ContainsAny(first, ".:") && first != "localhost"
}

// pinned returns repo (a name-only or tagged reference) with the tag or
// digest of orig: the digest if orig has one (dropping any tag, as
// containerd does), else orig's tag, else "latest".
func pinned(repo, orig reference.Named) (reference.Named, error) {
	base := reference.TrimNamed(repo)
	if d, ok := orig.(reference.Digested); ok {
		n, err := reference.WithDigest(base, d.Digest())
		if err != nil {
			return nil, fmt.Errorf("image name %q: %v: %w", reference.FamiliarString(orig), err, errdefs.ErrInvalidArgument)
		}
		return n, nil
	}
	tag := "latest"
	if t, ok := orig.(reference.Tagged); ok {
		tag = t.Tag()
	} else if t, ok := repo.(reference.Tagged); ok {
		tag = t.Tag() // an alias may carry a tag
	}
	n, err := reference.WithTag(base, tag)
	if err != nil {
		return nil, fmt.Errorf("image name %q: %v: %w", reference.FamiliarString(orig), err, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

func namesString(ns []reference.Named) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.String()
	}
	return strings.Join(s, ", ")
}

// checkBlocked rejects a reference whose registry registries.conf blocks.
// containers/image would reject it too, but with an error that carries no
// class.
func checkBlocked(sys *types.SystemContext, n reference.Named, confDesc string) error {
	reg, err := sysregistriesv2.FindRegistry(sys, n.Name())
	if err != nil {
		return fmt.Errorf("read %s: %v; fix the file: %w", confDesc, err, errdefs.ErrFailedPrecondition)
	}
	if reg != nil && reg.Blocked {
		return fmt.Errorf("registry %s is blocked by %s (blocked = true for prefix %q); pull from another registry or unblock it: %w",
			reference.Domain(n), confDesc, reg.Prefix, errdefs.ErrPermissionDenied)
	}
	return nil
}
