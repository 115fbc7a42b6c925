// Package logging sets up vmpod's slog logger and carries the request-scoped
// logger in a context, so code below the gRPC layer logs with the request's
// keys (method, sandbox_id, container_id, ...).
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

// Fixed attribute keys used across vmpod's logs.
const (
	KeySandboxID   = "sandbox_id"
	KeyContainerID = "container_id"
	KeyPod         = "pod"
	KeyDomain      = "domain"
	KeyHandler     = "handler"
	KeyImage       = "image"
	KeyErr         = "err"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json").
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

type key struct{}

// With returns ctx carrying log.
func With(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, key{}, log)
}

// From returns the logger carried by ctx, or slog.Default().
func From(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(key{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
