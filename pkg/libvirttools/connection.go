// Package libvirttools owns everything that touches libvirt. Code above it
// sees only the narrow Connection interface in vmpod's own types, so unit
// tests run against the stateful fake in libvirttools/fake, and libvirt
// error codes are translated to errdefs classes here.
//
// connection*.go are the only files importing libvirt.org/go/libvirt (cgo).
package libvirttools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

// Connection is vmpod's view of a libvirt daemon.
type Connection interface {
	Domains
	// Ping checks that libvirtd answers, reconnecting when the previous
	// connection died. It returns an error wrapping errdefs.ErrUnavailable
	// when libvirtd cannot be reached.
	Ping(ctx context.Context) (Info, error)
	// QEMUOwner returns the user and group QEMU runs as for domains of
	// domainType (DomainTypeKVM or DomainTypeQEMU), from libvirt's DAC
	// security model: vmpod gives that group access to the directories of
	// the VMs' files, and nobody else.
	QEMUOwner(ctx context.Context, domainType string) (Owner, error)
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
// reconnects after libvirtd restarts. Without an event loop there is no
// keepalive, so the client learns of a restart only from the next call,
// which fails with ErrUnavailable ("Cannot write data: Broken pipe"); the
// call after it reconnects.
//
// One libvirt connection is shared by all goroutines (virConnect is
// thread-safe); l.mu guards only which connection is current and how many
// calls use it, never a libvirt call other than (re)connecting. A
// connection found dead, or one a call failed on with ErrUnavailable, is
// retired: the next call opens a new one, and the old one is closed by the
// last call still using it, so no goroutine ever uses a freed virConnect.
type Libvirt struct {
	uri string
	mu  sync.Mutex
	cur *libvirtConn
}

// libvirtConn is one libvirt connection and the calls using it. users and
// retired are guarded by Libvirt.mu.
type libvirtConn struct {
	c       *libvirt.Connect
	users   int
	retired bool
}

var _ Connection = (*Libvirt)(nil)

// statusPollInterval is how often WaitShutoff asks libvirt for the state.
const statusPollInterval = 150 * time.Millisecond

// undefineFlags are tried in order until libvirt accepts one: older
// daemons reject flags they do not know with VIR_ERR_INVALID_ARG
// ("unsupported flags"). libvirt refuses to undefine a UEFI domain without
// the NVRAM flag, which the last set lacks: that error is then reported.
var undefineFlags = []libvirt.DomainUndefineFlagsValues{
	libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE |
		libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
	libvirt.DOMAIN_UNDEFINE_NVRAM | libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE |
		libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
	0,
}

// NewLibvirt returns a Connection for uri (e.g. qemu:///system). It does not
// connect yet: the daemon starts even when libvirtd is not up, and Status
// reports why the runtime is not ready.
func NewLibvirt(uri string) *Libvirt { return &Libvirt{uri: uri} }

// connect returns the current connection, opening a new one when there is
// none or the current one is dead, and counts the caller as its user. The
// caller must pass it to release when done.
func (l *Libvirt) connect(ctx context.Context) (*libvirtConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.cur; cur != nil {
		// IsAlive is local to the client (no RPC): it turns false once the
		// client saw the socket close.
		if alive, err := cur.c.IsAlive(); err == nil && alive {
			cur.users++
			return cur, nil
		}
		l.retireLocked(cur)
	}
	c, err := libvirt.NewConnect(l.uri)
	if err != nil {
		return nil, fmt.Errorf("connect to libvirt at %s (is libvirtd running?): %s: %w", l.uri, errorMessage(err), errdefs.ErrUnavailable)
	}
	l.cur = &libvirtConn{c: c, users: 1}
	return l.cur, nil
}

// release ends a call's use of lc, closing lc if it was retired and this
// was its last user.
func (l *Libvirt) release(lc *libvirtConn) {
	l.mu.Lock()
	lc.users--
	closeNow := lc.retired && lc.users == 0
	l.mu.Unlock()
	if closeNow {
		lc.c.Close()
	}
}

// retireLocked makes lc no longer current; it is closed now if unused, or
// by release when its last user is done. l.mu must be held.
func (l *Libvirt) retireLocked(lc *libvirtConn) {
	if l.cur == lc {
		l.cur = nil
	}
	if lc.retired {
		return
	}
	lc.retired = true
	if lc.users == 0 {
		lc.c.Close()
	}
}

// fail translates err from a libvirt call made on lc for op and, when it
// says the connection is unusable, retires lc so the next call reconnects.
func (l *Libvirt) fail(lc *libvirtConn, op string, err error) error {
	err = translateError(op, err)
	if errors.Is(err, errdefs.ErrUnavailable) {
		l.mu.Lock()
		l.retireLocked(lc)
		l.mu.Unlock()
	}
	return err
}

// withDomain looks up the domain name and runs fn on it. Errors fn returns
// from libvirt are translated for op; op is completed with the name.
func (l *Libvirt) withDomain(ctx context.Context, op, name string, fn func(*libvirt.Domain) error) error {
	op = fmt.Sprintf("%s %q", op, name)
	lc, err := l.connect(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer l.release(lc)
	dom, err := lc.c.LookupDomainByName(name)
	if err != nil {
		return l.fail(lc, op, err)
	}
	defer dom.Free()
	if err := fn(dom); err != nil {
		return l.fail(lc, op, err)
	}
	return nil
}

// Ping implements Connection.
func (l *Libvirt) Ping(ctx context.Context) (Info, error) {
	lc, err := l.connect(ctx)
	if err != nil {
		return Info{}, err
	}
	defer l.release(lc)
	v, err := lc.c.GetLibVersion()
	if err != nil {
		return Info{}, l.unavailable(lc, err)
	}
	hv, err := lc.c.GetType()
	if err != nil {
		return Info{}, l.unavailable(lc, err)
	}
	return Info{
		URI:            l.uri,
		LibvirtVersion: fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000),
		Hypervisor:     hv,
	}, nil
}

// unavailable reports a failed Ping: whatever failed, libvirtd is not
// usable, so lc is retired.
func (l *Libvirt) unavailable(lc *libvirtConn, err error) error {
	l.mu.Lock()
	l.retireLocked(lc)
	l.mu.Unlock()
	return fmt.Errorf("libvirt at %s: %s: %w", l.uri, errorMessage(err), errdefs.ErrUnavailable)
}

// Close implements Connection. Calls still running finish on the old
// connection; a later call connects again.
func (l *Libvirt) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		l.retireLocked(l.cur)
	}
	return nil
}

// translateError turns err from a libvirt call into an error for op that
// wraps vmpod's error class (errdefs) and keeps libvirt's message. Errors
// with no class keep the libvirt error code in the text instead.
func translateError(op string, err error) error {
	var lv libvirt.Error
	if !errors.As(err, &lv) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var class error
	switch lv.Code {
	case libvirt.ERR_NO_DOMAIN:
		class = errdefs.ErrNotFound
	case libvirt.ERR_OPERATION_INVALID, libvirt.ERR_AGENT_UNRESPONSIVE, libvirt.ERR_AGENT_UNSYNCED,
		libvirt.ERR_ARGUMENT_UNSUPPORTED:
		// ARGUMENT_UNSUPPORTED: the domain has no guest agent channel.
		class = errdefs.ErrFailedPrecondition
	case libvirt.ERR_DOM_EXIST:
		class = errdefs.ErrAlreadyExists
	case libvirt.ERR_OPERATION_FAILED:
		// virDomainDefineXML on a name or UUID held by another domain:
		// "domain 'a' already exists with uuid U" (same name) and
		// "domain 'a' is already defined with uuid U" (same UUID). The
		// code is generic, so the (untranslated, C locale) text decides.
		if strings.Contains(lv.Message, "already exists with uuid") ||
			strings.Contains(lv.Message, "already defined with uuid") {
			class = errdefs.ErrAlreadyExists
		}
	case libvirt.ERR_NO_CONNECT, libvirt.ERR_INVALID_CONN:
		class = errdefs.ErrUnavailable
	case libvirt.ERR_SYSTEM_ERROR, libvirt.ERR_INTERNAL_ERROR, libvirt.ERR_RPC:
		// From the RPC layer these mean the socket to libvirtd is gone
		// ("End of file while reading data", "Cannot write data: Broken
		// pipe", "client socket is closed"); from elsewhere they are
		// failures of the operation itself.
		if lv.Domain == libvirt.FROM_RPC {
			class = errdefs.ErrUnavailable
		}
		// A reply larger than the RPC protocol carries (4 MiB for a
		// string, e.g. a guest agent reply with captured output): the
		// connection is fine, the call cannot succeed.
		if lv.Domain == libvirt.FROM_RPC && strings.Contains(lv.Message, "Unable to encode message payload") {
			class = errdefs.ErrResourceExhausted
		}
	case libvirt.ERR_CONFIG_UNSUPPORTED, libvirt.ERR_XML_ERROR, libvirt.ERR_XML_DETAIL,
		libvirt.ERR_XML_INVALID_SCHEMA, libvirt.ERR_INVALID_ARG,
		libvirt.ERR_NO_NAME, libvirt.ERR_NO_OS: // definitions lacking <name>, <os>
		class = errdefs.ErrInvalidArgument
	}
	if class == nil {
		return fmt.Errorf("%s: %s (libvirt error %d)", op, lv.Message, lv.Code)
	}
	return fmt.Errorf("%s: %s: %w", op, lv.Message, class)
}

// errorMessage is libvirt's message of err, or err's text.
func errorMessage(err error) string {
	var lv libvirt.Error
	if errors.As(err, &lv) {
		return lv.Message
	}
	return err.Error()
}

// hasCode reports whether err is a libvirt error with code.
func hasCode(err error, code libvirt.ErrorNumber) bool {
	var lv libvirt.Error
	return errors.As(err, &lv) && lv.Code == code
}

// statusFromState maps libvirt's state and reason to vmpod's.
func statusFromState(state libvirt.DomainState, reason int) (DomainState, ShutoffReason) {
	switch state {
	case libvirt.DOMAIN_RUNNING, libvirt.DOMAIN_BLOCKED, libvirt.DOMAIN_PMSUSPENDED, libvirt.DOMAIN_SHUTDOWN:
		return DomainRunning, ShutoffUnknown
	case libvirt.DOMAIN_PAUSED:
		return DomainPaused, ShutoffUnknown
	case libvirt.DOMAIN_CRASHED:
		return DomainCrashed, ShutoffUnknown
	case libvirt.DOMAIN_SHUTOFF:
		switch libvirt.DomainShutoffReason(reason) {
		case libvirt.DOMAIN_SHUTOFF_UNKNOWN:
			return DomainShutoff, ShutoffUnknown
		case libvirt.DOMAIN_SHUTOFF_SHUTDOWN:
			return DomainShutoff, ShutoffShutdown
		case libvirt.DOMAIN_SHUTOFF_DESTROYED:
			return DomainShutoff, ShutoffDestroyed
		case libvirt.DOMAIN_SHUTOFF_CRASHED:
			return DomainShutoff, ShutoffCrashed
		case libvirt.DOMAIN_SHUTOFF_FAILED:
			return DomainShutoff, ShutoffFailed
		}
		return DomainShutoff, ShutoffOther
	}
	return DomainUnknown, ShutoffUnknown
}
