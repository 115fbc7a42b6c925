package cni

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The anti-spoofing guard. A VM is root on its pod's L2 segment, so every
// frame that enters the pod's bridge from a VM's tap passes an nftables
// chain (bridge family, prerouting hook, in the pod's netns) that drops it
// unless it carries the pod's identity:
//
//	table bridge vmpod
//	  chain prerouting (hook prerouting, priority filter, policy accept)
//	    iifname <tap> jump from-<tap>             one rule per interface
//	  chain from-<tap>
//	    ether saddr != <pod MAC> drop
//	    ARP: htype 1, ptype IPv4, hlen 6, plen 4, sender MAC = pod MAC,
//	         sender IP = a pod IPv4 address or 0.0.0.0 (RFC 5227 probe) -> accept
//	    UDP source port 67 (a DHCPv4 server) -> drop
//	    IPv4 from 0.0.0.0, UDP 68 -> 67 (DHCP DISCOVER/REQUEST) -> accept
//	    IPv4 from a pod IPv4 address -> accept
//	    and, only when the pod has IPv6 addresses:
//	    ICMPv6 router advertisement or redirect, UDP source port 547 -> drop
//	    ICMPv6 neighbour advertisement -> na-<tap>: target must be the
//	         pod's (a pod IPv6 address or its EUI-64 link-local), else drop
//	    IPv6 from a pod IPv6 address or the EUI-64 link-local -> accept
//	    IPv6 from :: carrying a neighbour solicitation (DAD) -> accept
//	    anything else (other addresses, other ethertypes, VLAN tags) -> drop
//
// Frames from the cluster (the veth port) are not filtered. The chain is
// keyed on the tap's name, which is stable across boots, so it is installed
// before the tap joins the bridge and outlives a tap re-created for the next
// boot. The table goes with the netns; Teardown also deletes it explicitly.
// The netlink calls go through github.com/google/nftables; no nft binary is
// needed. docs/security.md (the pod network) has the threat and the measurements.

// guardTable is the nftables table (bridge family) in each pod netns.
const guardTable = "vmpod"

// guardBaseChain is the table's chain on the bridge prerouting hook.
const guardBaseChain = "prerouting"

// bridgeFilterPriority is NF_BR_PRI_FILTER_BRIDGED ("priority filter" in the
// bridge family).
const bridgeFilterPriority = -200

// Ethertypes, IP protocols and ICMPv6 types the guard looks at.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	protoUDP      = 17
	protoICMPv6   = 58

	icmpv6RouterAdvert   = 134
	icmpv6NeighborSolict = 135
	icmpv6NeighborAdvert = 136
	icmpv6Redirect       = 137
)

// guardChain and naChain name an interface's chains.
func guardChain(tap string) string { return "from-" + tap }
func naChain(tap string) string    { return "na-" + tap }

// installGuard replaces the netns's guard table with one for every
// interface of att, in one nftables transaction: there is no moment with
// half a rule set, and running it again (recovery) is harmless.
func installGuard(att *Attachment) error {
	c, done, err := guardConn(att.NetNS)
	if err != nil {
		return err
	}
	defer done()
	t := &nftables.Table{Name: guardTable, Family: nftables.TableFamilyBridge}
	c.AddTable(t)
	c.DelTable(t) // with the add before it: delete whatever was there
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	base := c.AddChain(&nftables.Chain{
		Name: guardBaseChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(bridgeFilterPriority), Policy: &accept,
	})
	for _, ifc := range att.Interfaces {
		rules, err := guardRules(ifc)
		if err != nil {
			return fmt.Errorf("anti-spoofing rules for %s: %w", ifc.Name, err)
		}
		// Referenced chains first: a jump to a chain not yet added fails.
		if len(rules.na) > 0 {
			na := c.AddChain(&nftables.Chain{Name: naChain(ifc.Tap), Table: t})
			for _, e := range rules.na {
				c.AddRule(&nftables.Rule{Table: t, Chain: na, Exprs: e})
			}
		}
		from := c.AddChain(&nftables.Chain{Name: guardChain(ifc.Tap), Table: t})
		for _, e := range rules.from {
			c.AddRule(&nftables.Rule{Table: t, Chain: from, Exprs: e})
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: join(
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, eq(ifname(ifc.Tap))},
			verdict(expr.VerdictJump, guardChain(ifc.Tap)))})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install anti-spoofing rules in %s: %w", att.NetNS, err)
	}
	return nil
}

// removeGuard deletes the guard table; a missing table or netns is fine.
func removeGuard(nsPath string) error {
	if !isNetNS(nsPath) {
		return nil
	}
	c, done, err := guardConn(nsPath)
	if err != nil {
		return err
	}
	defer done()
	t := &nftables.Table{Name: guardTable, Family: nftables.TableFamilyBridge}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove anti-spoofing rules in %s: %w", nsPath, err)
	}
	return nil
}

// hasGuard reports whether the netns has the guard table (LeakCheck).
func hasGuard(nsPath string) bool {
	c, done, err := guardConn(nsPath)
	if err != nil {
		return false
	}
	defer done()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return false
	}
	for _, t := range tables {
		if t.Name == guardTable {
			return true
		}
	}
	return false
}

// guardConn opens an nftables connection into the netns at path.
func guardConn(path string) (*nftables.Conn, func(), error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		ns.Close()
		return nil, nil, fmt.Errorf("nftables in network namespace %s: %w", path, err)
	}
	return c, func() { c.CloseLasting(); ns.Close() }, nil
}

// ruleSet is one interface's rules: the from-<tap> chain's and the
// na-<tap> chain's, each rule a list of expressions.
type ruleSet struct {
	from, na [][]expr.Any
}

// guardRules builds an interface's rules (see the table at the top of this
// file). It is pure; an interface without a valid unicast MAC or tap name
// is an error.
func guardRules(ifc Interface) (ruleSet, error) {
	mac, err := net.ParseMAC(ifc.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return ruleSet{}, fmt.Errorf("pod MAC %q is not a unicast Ethernet address", ifc.MAC)
	}
	if ifc.Tap == "" || len(ifc.Tap) >= unix.IFNAMSIZ {
		return ruleSet{}, fmt.Errorf("tap name %q is not a valid interface name", ifc.Tap)
	}
	var v4, v6 []netip.Addr
	for _, a := range ifc.Addresses {
		if a.Prefix.Addr().Is4() {
			v4 = append(v4, a.Prefix.Addr())
		} else {
			v6 = append(v6, a.Prefix.Addr())
		}
	}
	var r ruleSet
	add := func(e ...[]expr.Any) { r.from = append(r.from, join(e...)) }
	drop := verdict(expr.VerdictDrop, "")
	acceptV := verdict(expr.VerdictAccept, "")
	counted := join([]expr.Any{&expr.Counter{}}, drop)

	add([]expr.Any{ll(6, 6), &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: mac}}, counted)
	arpHead := []expr.Any{ll(12, 2), eq(be16(etherTypeARP)),
		nh(0, 2), eq(be16(1)), nh(2, 2), eq(be16(etherTypeIPv4)), nh(4, 1), eq([]byte{6}), nh(5, 1), eq([]byte{4}),
		nh(8, 6), eq(mac)}
	for _, ip := range append(append([]netip.Addr{}, v4...), netip.IPv4Unspecified()) {
		add(arpHead, []expr.Any{nh(14, 4), eq(ip.AsSlice())}, acceptV)
	}
	add(l4(protoUDP), []expr.Any{th(0, 2), eq(be16(67))}, counted)
	ipv4 := []expr.Any{ll(12, 2), eq(be16(etherTypeIPv4))}
	add(ipv4, []expr.Any{nh(12, 4), eq(net.IPv4zero.To4())}, l4(protoUDP),
		[]expr.Any{th(0, 2), eq(be16(68)), th(2, 2), eq(be16(67))}, acceptV)
	for _, ip := range v4 {
		add(ipv4, []expr.Any{nh(12, 4), eq(ip.AsSlice())}, acceptV)
	}
	if len(v6) > 0 {
		own := append(append([]netip.Addr{}, v6...), linkLocal(mac))
		icmp := func(typ byte) []expr.Any { return join(l4(protoICMPv6), []expr.Any{th(0, 1), eq([]byte{typ})}) }
		add(icmp(icmpv6RouterAdvert), counted)
		add(icmp(icmpv6Redirect), counted)
		add(l4(protoUDP), []expr.Any{th(0, 2), eq(be16(547))}, counted)
		add(icmp(icmpv6NeighborAdvert), verdict(expr.VerdictJump, naChain(ifc.Tap)))
		ipv6 := []expr.Any{ll(12, 2), eq(be16(etherTypeIPv6))}
		for _, ip := range own {
			add(ipv6, []expr.Any{nh(8, 16), eq(ip.AsSlice())}, acceptV)
			r.na = append(r.na, join([]expr.Any{th(8, 16), eq(ip.AsSlice())}, verdict(expr.VerdictReturn, "")))
		}
		r.na = append(r.na, counted)
		add(ipv6, []expr.Any{nh(8, 16), eq(netip.IPv6Unspecified().AsSlice())}, icmp(icmpv6NeighborSolict), acceptV)
	}
	add(counted)
	return r, nil
}

// linkLocal is the EUI-64 link-local address of mac (RFC 4291 appendix A),
// the one Linux gives an interface by default (addr_gen_mode eui64).
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// Expression helpers: every load goes to register 1, every compare reads it.

func ll(off, n uint32) expr.Any { return payload(expr.PayloadBaseLLHeader, off, n) }
func nh(off, n uint32) expr.Any { return payload(expr.PayloadBaseNetworkHeader, off, n) }
func th(off, n uint32) expr.Any { return payload(expr.PayloadBaseTransportHeader, off, n) }

func payload(base expr.PayloadBase, off, n uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
}

func eq(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

// l4 matches the transport protocol the kernel found (after IPv6 extension
// headers); transport header loads need it.
func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq([]byte{proto})}
}

func verdict(kind expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// ifname is an interface name as meta iifname compares it: NUL-padded to
// IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
