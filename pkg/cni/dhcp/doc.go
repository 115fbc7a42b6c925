// Package dhcp is the per-VM DHCPv4 server: it hands one VM the pod's IP
// address, taken from the CNI result, over the tap that connects the VM to
// the pod's network.
//
// Inside a pod's network namespace the CNI veth (eth0, its address removed),
// a Linux bridge and a tap are wired together; QEMU holds the tap's other
// end as the VM's virtio NIC. Start opens one server per VM and the caller
// closes it when the pod's network goes away.
//
// # Why an AF_PACKET socket on the tap
//
// A UDP socket on port 67 in the pod netns would need an address on the
// bridge and would miss the renewals that matter most: once configured, the
// guest unicasts DHCPREQUEST to the gateway's MAC and IP, which the bridge
// forwards out of eth0 and never hands to its own stack. A packet socket
// bound to the tap sees every frame the VM sends, whatever its destination,
// and frames written to it go out of the tap only, so replies reach this VM
// and no other pod. Replies are built down to the Ethernet header here: the
// source MAC is the tap's (or Config.ServerMAC), the destination the
// client's chaddr, the source IP Lease.ServerID.
//
// # Why ETH_P_ALL
//
// The tap is a bridge port, and the bridge's rx_handler consumes each frame
// the tap receives. Protocol-specific packet sockets (ETH_P_IP) are
// delivered after rx_handler and so see nothing; only ETH_P_ALL taps run
// before it. The socket therefore binds ETH_P_ALL to the tap's ifindex and a
// classic BPF filter keeps only IPv4/UDP to port 67 and drops
// PACKET_OUTGOING frames: our own replies and whatever the bridge forwards
// to the VM, which includes other pods' DHCP broadcasts.
//
// # Why foreign MACs are ignored
//
// All pods of a bridge CNI share one L2 segment, and each pod's server
// answers only its own VM. A message whose chaddr is not Lease.MAC belongs
// to some other server: it gets no reply at all, never a NAK, which would
// make that client drop a valid lease. Such messages are counted in Stats.
//
// # Why the guest's bytes are bounded
//
// The guest is not trusted, and its frames reach vmpod's process. Frames
// over MaxFrameLen are dropped unread; a message whose options the server
// reads or echoes are malformed is ignored (checkRequest), never read as if
// the option were absent; a parser panic drops the frame. A server handles
// at most MessagesPerSecond messages after a burst of MessageBurst, and
// the log lines a guest's frames cause are limited to LogLinesPerMinute
// after LogBurst, at every level (limits.go). Servers are per VM, so a
// flood delays only the flooding guest's own answers.
//
// The protocol mapping (DISCOVER to OFFER, REQUEST to ACK or NAK, INFORM to
// ACK) is the pure function respond; see its table.
package dhcp
