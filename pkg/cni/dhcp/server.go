package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// Config names where to serve and what.
type Config struct {
	// NetNSPath is the pod's network namespace, e.g. /run/netns/vmpod-xxx;
	// "" means the caller's current netns (tests).
	NetNSPath string
	// Interface is the tap's name inside that netns. It must exist when
	// Start is called. Required.
	Interface string
	// ServerMAC is the source MAC of replies; empty means the tap's own
	// address. A fixed locally administered address keeps the source stable
	// across tap re-creation.
	ServerMAC net.HardwareAddr
	// Lease is the one lease this server hands out.
	Lease Lease
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server answers DHCPv4 for one VM on one tap. Its methods are safe for
// concurrent use.
type Server struct {
	conn   *packetConn
	lease  Lease
	srcMAC net.HardwareAddr
	log    *slog.Logger

	answered, ignored atomic.Uint64
	leased            atomic.Bool // the first lease was logged
	limits            *guestLimits

	closeOnce sync.Once
	closeErr  error
	stop      chan struct{} // closed by Close
	stopCtx   context.Context
	cancel    context.CancelFunc // ends stopCtx; called by Close
	done      chan struct{}      // closed when serve returns
}

// Start validates cfg, opens the server's socket on cfg.Interface inside
// cfg.NetNSPath and serves in a goroutine until Close. The tap must already
// exist in that netns; the socket is bound to its ifindex, so a tap that is
// deleted and re-created needs a new Start (one merely set down and up keeps
// being served). Needs CAP_NET_RAW, and CAP_SYS_ADMIN to enter the netns.
// Errors: a bad Config or Lease wraps ErrInvalidConfig; a missing netns or
// interface, or a socket that cannot be opened, is returned with context.
func Start(cfg Config) (*Server, error) {
	if cfg.Interface == "" {
		return nil, fmt.Errorf("%w: no interface", ErrInvalidConfig)
	}
	if cfg.ServerMAC != nil && (len(cfg.ServerMAC) != 6 || cfg.ServerMAC[0]&1 != 0) {
		return nil, fmt.Errorf("%w: server MAC %q is not a unicast Ethernet address", ErrInvalidConfig, cfg.ServerMAC)
	}
	lease, err := cfg.Lease.validate()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("interface", cfg.Interface, "mac", lease.MAC.String())

	conn, err := openPacketConn(cfg.NetNSPath, cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("start DHCP server on %s (netns %q): %w", cfg.Interface, cfg.NetNSPath, err)
	}
	srcMAC := append(net.HardwareAddr(nil), cfg.ServerMAC...)
	if len(srcMAC) == 0 {
		srcMAC = conn.mac
	}
	if len(srcMAC) != 6 {
		conn.close()
		return nil, fmt.Errorf("%w: interface %s has no Ethernet address and no ServerMAC is set", ErrInvalidConfig, cfg.Interface)
	}
	s := &Server{
		conn:   conn,
		lease:  lease,
		srcMAC: srcMAC,
		log:    log,
		limits: newGuestLimits(),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.stopCtx, s.cancel = context.WithCancel(context.Background())
	go s.serve()
	log.Debug("DHCP server started", "ip", lease.IP.String(), "server_id", lease.ServerID.String())
	return s, nil
}

// Close stops the server: it closes the socket and returns once the serving
// goroutine has exited. It is idempotent; every call returns the result of
// closing the socket.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.cancel()
		s.closeErr = s.conn.close()
	})
	<-s.done
	return s.closeErr
}

// Stats returns how many client messages got a reply (answered) and how
// many got none (ignored: foreign MACs, RELEASE, DECLINE, requests for
// another server, undecodable, malformed or oversized frames). Failed
// sends count in neither.
func (s *Server) Stats() (answered, ignored uint64) {
	return s.answered.Load(), s.ignored.Load()
}

// serve reads frames until Close, handling at most MessagesPerSecond
// (after a burst of MessageBurst).
func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, MaxFrameLen)
	for {
		if err := s.limits.messages.Wait(s.stopCtx); err != nil {
			return // closed
		}
		n, err := s.conn.read(buf)
		select {
		case <-s.stop:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, unix.ENETDOWN) {
				// Reported once when the tap goes down or is deleted.
				// A tap that comes back up keeps working; a deleted and
				// re-created one needs a new Start.
				s.log.Warn("DHCP interface went down; if it was re-created, the server must be restarted", "err", err)
				continue
			}
			s.log.Warn("DHCP read failed", "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond): // don't spin on a persistent error
			}
			continue
		}
		if n > len(buf) {
			s.ignored.Add(1)
			s.guestLog(slog.LevelDebug, "DHCP dropped oversized frame", "bytes", n, "max", MaxFrameLen)
			continue
		}
		s.handle(buf[:n])
	}
}

// handle answers one received frame, or counts it as ignored. Every byte
// of it comes from the guest: its log lines go through guestLog, and a
// panic in a parser drops the frame instead of ending vmpod.
func (s *Server) handle(b []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.ignored.Add(1)
			s.guestLog(slog.LevelError, "DHCP frame made the parser panic; dropped", "panic", fmt.Sprint(r))
		}
	}()
	req, err := decode(b)
	if err != nil {
		s.ignored.Add(1)
		s.guestLog(slog.LevelDebug, "DHCP dropped frame", "err", err)
		return
	}
	msg := []any{"type", req.MessageType().String(), "xid", req.TransactionID.String(), "chaddr", req.ClientHWAddr.String()}
	logf := func(level slog.Level, line string, args ...any) { s.guestLog(level, line, append(msg, args...)...) }

	reply, why := respond(req, &s.lease)
	if reply == nil {
		s.ignored.Add(1)
		logf(slog.LevelDebug, "DHCP no reply", "reason", why)
		if bytes.Equal(req.ClientHWAddr, s.lease.MAC) {
			switch req.MessageType() {
			case dhcpv4.MessageTypeRelease:
				logf(slog.LevelInfo, "DHCP client released its lease", "ip", req.ClientIPAddr.String())
			case dhcpv4.MessageTypeDecline:
				logf(slog.LevelWarn, "DHCP client declined its address: something else on the segment uses it",
					"ip", req.RequestedIPAddress().String())
			}
		}
		return
	}

	dst := replyDestination(req, reply)
	frame := buildFrame(udpFrame{
		srcMAC: s.srcMAC, dstMAC: s.lease.MAC,
		srcIP: s.lease.ServerID, dstIP: dst,
		srcPort: serverPort, dstPort: clientPort,
		payload: reply.ToBytes(),
	})
	if err := s.conn.write(frame); err != nil {
		logf(slog.LevelWarn, "DHCP send reply failed", "reply", reply.MessageType().String(), "err", err)
		return
	}
	s.answered.Add(1)
	logf(slog.LevelDebug, "DHCP replied", "reply", reply.MessageType().String(), "reason", why, "dst", dst.String())
	if reply.MessageType() == dhcpv4.MessageTypeAck && isSet(reply.YourIPAddr) && s.leased.CompareAndSwap(false, true) {
		// Once per server: not a line the guest can repeat.
		s.log.Info("DHCP lease handed out", append(msg, "ip", s.lease.IP.String(), "lease_time", s.lease.LeaseTime)...)
	}
}

// decode returns the DHCP client message in an Ethernet frame, or an error
// when the frame is not IPv4/UDP to port 67 or the message is undecodable
// or malformed (checkRequest).
func decode(b []byte) (*dhcpv4.DHCPv4, error) {
	f, err := parseFrame(b)
	if err != nil {
		return nil, err
	}
	if f.dstPort != serverPort {
		return nil, fmt.Errorf("UDP port %d", f.dstPort)
	}
	req, err := dhcpv4.FromBytes(f.payload)
	if err == nil {
		err = checkRequest(req)
	}
	if err != nil {
		return nil, fmt.Errorf("malformed DHCP message from %s: %w", f.srcMAC, err)
	}
	return req, nil
}
