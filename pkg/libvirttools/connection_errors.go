package libvirttools

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"libvirt.org/go/libvirt"
)

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

// isNoDomain says err is libvirt's "no such domain".
func isNoDomain(err error) bool {
	var lv libvirt.Error
	return errors.As(err, &lv) && lv.Code == libvirt.ERR_NO_DOMAIN
}
