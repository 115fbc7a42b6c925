package cloudinit

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// netV2 is a cloud-init network config version 2 document (netplan
// subset), written at the top level of NoCloud's network-config.
type netV2 struct {
	Version   int                   `yaml:"version"`
	Ethernets map[string]ethernetV2 `yaml:"ethernets"`
}

type ethernetV2 struct {
	Match       matchV2        `yaml:"match"`
	SetName     string         `yaml:"set-name,omitempty"`
	DHCP4       bool           `yaml:"dhcp4,omitempty"`
	Addresses   []string       `yaml:"addresses,omitempty"`
	MTU         int            `yaml:"mtu,omitempty"`
	Routes      []routeV2      `yaml:"routes,omitempty"`
	Nameservers *nameserversV2 `yaml:"nameservers,omitempty"`
}

type matchV2 struct {
	Name       string `yaml:"name,omitempty"`
	MACAddress string `yaml:"macaddress,omitempty"`
}

type routeV2 struct {
	To     string `yaml:"to"`
	Via    string `yaml:"via"`
	Metric int    `yaml:"metric,omitempty"`
}

type nameserversV2 struct {
	Addresses []string `yaml:"addresses,omitempty"`
	Search    []string `yaml:"search,omitempty"`
}

// networkConfigV2 renders nics (DHCPv4 on every e* interface when empty)
// with the DNS servers and search domains on the first interface.
func networkConfigV2(nics []NIC, dns *DNS) ([]byte, error) {
	var ns *nameserversV2
	if dns != nil && (len(dns.Servers) > 0 || len(dns.Searches) > 0) {
		ns = &nameserversV2{Addresses: dns.Servers, Search: dns.Searches}
	}
	cfg := netV2{Version: 2, Ethernets: map[string]ethernetV2{}}
	if len(nics) == 0 {
		cfg.Ethernets["all-ethernets"] = ethernetV2{Match: matchV2{Name: "e*"}, DHCP4: true, Nameservers: ns}
	}
	for i, n := range nics {
		mac, _ := parseMAC(n.MAC)
		id := n.Name
		if id == "" {
			id = fmt.Sprintf("nic%d", i)
		}
		e := ethernetV2{Match: matchV2{MACAddress: mac}, SetName: n.Name, MTU: n.MTU, DHCP4: len(n.Addresses) == 0}
		for _, a := range n.Addresses {
			e.Addresses = append(e.Addresses, a.String())
		}
		// Default routes as 0.0.0.0/0 and ::/0 rather than gateway4/6
		// (deprecated by netplan) or "to: default" (not read by older cloud-init).
		if n.Gateway4.IsValid() {
			e.Routes = append(e.Routes, routeV2{To: "0.0.0.0/0", Via: n.Gateway4.String()})
		}
		if n.Gateway6.IsValid() {
			e.Routes = append(e.Routes, routeV2{To: "::/0", Via: n.Gateway6.String()})
		}
		for _, r := range n.Routes {
			e.Routes = append(e.Routes, routeV2{To: r.To.String(), Via: r.Via.String(), Metric: r.Metric})
		}
		if i == 0 {
			e.Nameservers = ns
		}
		cfg.Ethernets[id] = e
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// networkDataJSON is OpenStack's network_data.json as cloud-init's
// ConfigDrive datasource reads it (cloudinit/sources/helpers/openstack.py
// convert_net_json).
type networkDataJSON struct {
	Links    []linkJSON    `json:"links"`
	Networks []networkJSON `json:"networks"`
	Services []serviceJSON `json:"services"`
}

type linkJSON struct {
	ID                 string `json:"id"`
	Name               string `json:"name,omitempty"`
	Type               string `json:"type"`
	EthernetMACAddress string `json:"ethernet_mac_address"`
	MTU                int    `json:"mtu,omitempty"`
}

type networkJSON struct {
	ID        string      `json:"id"`
	Link      string      `json:"link"`
	Type      string      `json:"type"`
	IPAddress string      `json:"ip_address,omitempty"`
	Netmask   string      `json:"netmask,omitempty"`
	Routes    []routeJSON `json:"routes,omitempty"`
	// DNSSearch is not in OpenStack's schema; cloud-init passes it through
	// to its network config v1 subnet (dns_search).
	DNSSearch []string      `json:"dns_search,omitempty"`
	Services  []serviceJSON `json:"services,omitempty"`
}

type routeJSON struct {
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	Gateway string `json:"gateway"`
	Metric  int    `json:"metric,omitempty"`
}

type serviceJSON struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// networkData renders nics as network_data.json: one "phy" link per NIC
// and one network per address (ipv4_dhcp for a NIC without addresses);
// routes go to the network of their address family.
func networkData(nics []NIC, dns *DNS) ([]byte, error) {
	nd := networkDataJSON{Links: []linkJSON{}, Networks: []networkJSON{}, Services: []serviceJSON{}}
	if dns != nil {
		for _, s := range dns.Servers {
			nd.Services = append(nd.Services, serviceJSON{Type: "dns", Address: s})
		}
	}
	for i, n := range nics {
		mac, _ := parseMAC(n.MAC)
		link := fmt.Sprintf("nic%d", i)
		nd.Links = append(nd.Links, linkJSON{ID: link, Name: n.Name, Type: "phy", EthernetMACAddress: mac, MTU: n.MTU})
		if len(n.Addresses) == 0 {
			nd.Networks = append(nd.Networks, networkJSON{ID: fmt.Sprintf("network%d", len(nd.Networks)), Link: link, Type: "ipv4_dhcp"})
			continue
		}
		first4, first6 := true, true
		for _, a := range n.Addresses {
			nw := networkJSON{
				ID:        fmt.Sprintf("network%d", len(nd.Networks)),
				Link:      link,
				IPAddress: a.Addr().String(),
				Netmask:   prefixMask(a),
			}
			if a.Addr().Is4() {
				nw.Type = "ipv4"
				if first4 {
					first4 = false
					if n.Gateway4.IsValid() {
						nw.Routes = append(nw.Routes, routeJSON{Network: "0.0.0.0", Netmask: "0.0.0.0", Gateway: n.Gateway4.String()})
					}
					nw.Routes = append(nw.Routes, routesJSON(n.Routes, true)...)
					if i == 0 && dns != nil {
						nw.DNSSearch = dns.Searches
					}
				}
			} else {
				nw.Type = "ipv6"
				if first6 {
					first6 = false
					if n.Gateway6.IsValid() {
						nw.Routes = append(nw.Routes, routeJSON{Network: "::", Netmask: "::", Gateway: n.Gateway6.String()})
					}
					nw.Routes = append(nw.Routes, routesJSON(n.Routes, false)...)
				}
			}
			nd.Networks = append(nd.Networks, nw)
		}
	}
	return toJSON(nd)
}

// routesJSON renders the routes of one address family.
func routesJSON(rs []Route, v4 bool) []routeJSON {
	var out []routeJSON
	for _, r := range rs {
		if r.To.Addr().Is4() != v4 {
			continue
		}
		out = append(out, routeJSON{Network: r.To.Masked().Addr().String(), Netmask: prefixMask(r.To), Gateway: r.Via.String(), Metric: r.Metric})
	}
	return out
}

// prefixMask renders p's prefix length as a netmask ("255.255.255.0",
// "ffff:ffff:ffff:ffff::"), as Nova writes it.
func prefixMask(p netip.Prefix) string {
	bits := 32
	if p.Addr().Is6() && !p.Addr().Is4In6() {
		bits = 128
	}
	m := net.CIDRMask(p.Bits(), bits)
	ip, _ := netip.AddrFromSlice(m)
	return ip.String()
}

// parseMAC validates a 48-bit MAC and returns it lower-case with colons.
func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("invalid MAC %q", s)
	}
	return strings.ToLower(hw.String()), nil
}
