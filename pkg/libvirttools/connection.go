// Package libvirttools owns everything that touches libvirt. Code above it
// sees only the narrow Connection interface in vmpod's own types, so unit
// tests run against the stateful fake in libvirttools/fake, and libvirt
// error codes are translated to errdefs classes here.
//
// This file is the only one importing libvirt.org/go/libvirt (cgo).
package libvirttools

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// Connection is vmpod's view of a libvirt daemon.
type Connection interface {
	// Ping checks that libvirtd answers, reconnecting when the previous
	// connection died. It returns an error wrapping errdefs.ErrUnavailable
	// when libvirtd cannot be reached.
	Ping(ctx context.Context) (Info, error)
	// Close closes the connection.
	Close() error
}

// Info describes the libvirt daemon a Connection talks to.
type Info struct {
	URI            string
	LibvirtVersion string
	Hypervisor     string
}

// Libvirt is a Connection to a real libvirtd. It connects lazily and
// reconnects after libvirtd restarts.
type Libvirt struct {
	uri  string
	mu   sync.Mutex
	conn *libvirt.Connect
}

// NewLibvirt returns a Connection for uri (e.g. qemu:///system). It does not
// connect yet: the daemon starts even when libvirtd is not up, and Status
// reports why the runtime is not ready.
func NewLibvirt(uri string) *Libvirt { return &Libvirt{uri: uri} }

func (l *Libvirt) connect() (*libvirt.Connect, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		if alive, err := l.conn.IsAlive(); err == nil && alive {
			return l.conn, nil
		}
		l.conn.Close()
		l.conn = nil
	}
	c, err := libvirt.NewConnect(l.uri)
	if err != nil {
		return nil, fmt.Errorf("connect to libvirt at %s (is libvirtd running?): %v: %w", l.uri, err, errdefs.ErrUnavailable)
	}
	l.conn = c
	return c, nil
}

// Ping implements Connection.
func (l *Libvirt) Ping(ctx context.Context) (Info, error) {
	c, err := l.connect()
	if err != nil {
		return Info{}, err
	}
	v, err := c.GetLibVersion()
	if err != nil {
		return Info{}, fmt.Errorf("libvirt at %s: %v: %w", l.uri, err, errdefs.ErrUnavailable)
	}
	hv, err := c.GetType()
	if err != nil {
		return Info{}, fmt.Errorf("libvirt at %s: %v: %w", l.uri, err, errdefs.ErrUnavailable)
	}
	return Info{
		URI:            l.uri,
		LibvirtVersion: fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000),
		Hypervisor:     hv,
	}, nil
}

// Close implements Connection.
func (l *Libvirt) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	_, err := l.conn.Close()
	l.conn = nil
	return err
}
