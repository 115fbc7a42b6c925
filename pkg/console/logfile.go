package console

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// logFile is a container's CRI log file. The console and the command's
// output streams share it: each write is whole lines, made under one
// lock, so lines of different streams never mix.
type logFile struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File // nil once closed
	failing bool     // the last write failed and was reported
}

func openLogFile(path string, log *slog.Logger) (*logFile, error) {
	f, err := openLog(path)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, log: log, f: f}, nil
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create container log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	return f, nil
}

// write appends formatted lines. A failure (disk full) is reported once
// until a write succeeds again; the lines are lost, the readers go on.
func (l *logFile) write(b []byte) {
	if len(b) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.f != nil {
		_, err = l.f.Write(b)
	}
	switch {
	case err != nil && !l.failing:
		l.failing = true
		l.log.Warn("write container log", "path", l.path, "err", err)
	case err == nil && l.failing:
		l.failing = false
		l.log.Info("write container log works again", "path", l.path)
	}
}

// reopen closes the file and opens the path again (after the kubelet
// renamed it for rotation); on failure the old file stays in use.
func (l *logFile) reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	f, err := openLog(l.path)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	if err := l.f.Close(); err != nil {
		// Everything was written already; only the descriptor is lost.
		l.log.Warn("close rotated container log", "err", err)
	}
	l.f = f
	return nil
}

// close closes the file; later writes are dropped.
func (l *logFile) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("close container log: %w", err)
	}
	return nil
}
