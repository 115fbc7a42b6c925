package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/time/rate"
)

// What a guest can make its server do is bounded. Each VM has a server of
// its own, so a guest that floods DHCP delays only its own answers; the
// limits keep it from flooding vmpod's log or spending vmpod's CPU.
const (
	// MaxFrameLen is the longest frame read. A DHCP message is a few hundred
	// bytes (RFC 2131 clients must accept 576); a longer frame is dropped
	// unparsed and counted as ignored.
	MaxFrameLen = 2048
	// MessagesPerSecond and MessageBurst bound the messages a server handles
	// (parses and answers): a booting client sends two to four, a renewing
	// one one per T1. Beyond the burst the server reads the next frame
	// only when the rate allows; frames meanwhile wait in the socket's
	// receive buffer (socketRcvBuf), and the kernel drops what does not fit.
	MessagesPerSecond = 20
	MessageBurst      = 40
	// LogLinesPerMinute and LogBurst bound the lines a guest's frames can
	// put in vmpod's log, at every level: past them lines are counted, and
	// the next line logged carries the count as suppressed_lines.
	LogLinesPerMinute = 10
	LogBurst          = 10
	// socketRcvBuf is the receive buffer asked for the server's socket
	// (the kernel doubles it for bookkeeping): at most a few dozen frames
	// queue behind a flood.
	socketRcvBuf = 64 << 10
)

// guestLimits holds a server's limiters.
type guestLimits struct {
	messages   *rate.Limiter
	lines      *rate.Limiter
	suppressed atomic.Uint64
}

func newGuestLimits() *guestLimits {
	return &guestLimits{
		messages: rate.NewLimiter(MessagesPerSecond, MessageBurst),
		lines:    rate.NewLimiter(rate.Every(time.Minute/LogLinesPerMinute), LogBurst),
	}
}

// guestLog logs a line a guest's frame caused, if the line budget allows.
// Lines of a level the logger does not print spend no budget.
func (s *Server) guestLog(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	if !s.limits.lines.Allow() {
		s.limits.suppressed.Add(1)
		return
	}
	if n := s.limits.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_lines", n)
	}
	s.log.Log(ctx, level, msg, args...)
}

// checkRequest refuses a client message whose fields or options that the
// server reads or echoes are malformed, instead of reading a malformed
// option as an absent one (a 3-byte server identifier would otherwise
// turn a SELECTING request into an INIT-REBOOT one).
func checkRequest(req *dhcpv4.DHCPv4) error {
	if req.HWType == iana.HWTypeEthernet && len(req.ClientHWAddr) != 6 {
		return fmt.Errorf("Ethernet chaddr of %d bytes", len(req.ClientHWAddr))
	}
	for _, o := range []struct {
		code     dhcpv4.OptionCode
		min, max int
	}{
		{dhcpv4.OptionDHCPMessageType, 1, 1},
		{dhcpv4.OptionRequestedIPAddress, 4, 4},
		{dhcpv4.OptionServerIdentifier, 4, 4},
		{dhcpv4.OptionClientIdentifier, 2, 255}, // RFC 2132 section 9.14; echoed in replies
	} {
		v, present := req.Options[o.code.Code()]
		if !present {
			if o.code == dhcpv4.OptionDHCPMessageType {
				return fmt.Errorf("no message type (option 53)")
			}
			continue
		}
		if len(v) < o.min || len(v) > o.max {
			return fmt.Errorf("option %d has %d bytes, want %d to %d", o.code.Code(), len(v), o.min, o.max)
		}
	}
	return nil
}
