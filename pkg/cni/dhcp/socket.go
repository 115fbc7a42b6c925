package dhcp

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/vmpod/vmpod/pkg/cni/nsenter"
	"golang.org/x/sys/unix"
)

// packetConn is an AF_PACKET socket bound to one interface, on Go's poller
// so that Close unblocks a pending read.
type packetConn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
	mac     net.HardwareAddr // the interface's own address
}

// openPacketConn opens the server's socket on iface inside the netns at
// nsPath ("" = the caller's). The socket stays in that netns for its life.
func openPacketConn(nsPath, iface string) (*packetConn, error) {
	var c *packetConn
	err := nsenter.Run(nsPath, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return fmt.Errorf("find interface %q: %w", iface, err)
		}
		c, err = listen(ifc)
		return err
	})
	return c, err
}

// listen opens the socket on ifc. ETH_P_ALL rather than ETH_P_IP, because
// a tap that is a bridge port hands every frame to the bridge's rx_handler,
// which consumes it: only the ptype_all taps, run before rx_handler, see the
// VM's frames. The socket is created with protocol 0 (receiving nothing),
// gets its filter, and only then is bound with ETH_P_ALL to ifc, so no frame
// of another interface or not matching the filter ever queues on it.
func listen(ifc *net.Interface) (_ *packetConn, retErr error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	defer func() {
		if retErr != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	filter, err := socketFilter()
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketRcvBuf); err != nil {
		return nil, fmt.Errorf("set receive buffer of packet socket: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return nil, fmt.Errorf("attach socket filter: %w", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifc.Name, err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+ifc.Name)
	fd = -1 // f owns it now
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw conn of packet socket: %w", err)
	}
	return &packetConn{f: f, rc: rc, ifindex: ifc.Index, mac: ifc.HardwareAddr}, nil
}

// read waits for one frame that the kernel did not mark PACKET_OUTGOING
// (the filter drops those; the check here is belt and braces). It returns
// the frame's real length, which is more than len(buf) when the frame was
// cut to fit (MSG_TRUNC).
func (c *packetConn) read(buf []byte) (int, error) {
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := c.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return 0, err
		}
		if rerr == unix.EINTR {
			continue
		}
		if rerr != nil {
			return 0, rerr
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return n, nil
	}
}

// write sends one complete Ethernet frame out of the interface.
func (c *packetConn) write(frame []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: c.ifindex}
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), frame, 0, to)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

// close closes the socket, waking a pending read with os.ErrClosed.
func (c *packetConn) close() error {
	return c.f.Close()
}

// htons converts a 16-bit protocol number to network byte order, as
// AF_PACKET wants it in socket() and sockaddr_ll.
func htons(v uint16) uint16 {
	return v<<8 | v>>8
}
