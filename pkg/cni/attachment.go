package cni

import (
	"encoding/json"
	"net/netip"
)

// Attachment is a sandbox's network as stored with the sandbox record.
type Attachment struct {
	// SandboxID names the CNI attachment (CNI_CONTAINERID) and the netns.
	SandboxID string `json:"sandbox_id"`
	// NetNS is the network namespace's bind mount.
	NetNS string `json:"netns"`
	// ConfFile is the config file the network came from.
	ConfFile string `json:"conf_file"`
	// ConfList is the network config list used for ADD; DEL uses the same.
	ConfList json.RawMessage `json:"conf_list"`
	// Args are the CNI_ARGS of ADD; DEL passes the same.
	Args [][2]string `json:"args,omitempty"`
	// CapabilityArgs are the runtimeConfig capability args of ADD
	// (portMappings, bandwidth).
	CapabilityArgs map[string]any `json:"capability_args,omitempty"`
	// Result is the CNI ADD result (CNI spec 1.0 form), empty until ADD
	// succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// Interfaces are the pod's interfaces in the netns, in result order;
	// each becomes one VM NIC.
	Interfaces []Interface `json:"interfaces,omitempty"`
}

// Interface is one pod interface handed to the VM.
type Interface struct {
	// Name is the interface in the netns (eth0, net1, ...).
	Name string `json:"name"`
	// MAC is the pod's MAC address; the VM's NIC takes it.
	MAC string `json:"mac"`
	// MTU is the interface's MTU.
	MTU int `json:"mtu"`
	// Tap is the tap device of the VM's NIC (host-unique name).
	Tap string `json:"tap"`
	// Bridge is the bridge joining Name and Tap inside the netns.
	Bridge string `json:"bridge"`
	// Addresses are the interface's addresses with their gateways.
	Addresses []Address `json:"addresses,omitempty"`
	// Routes are the routes the guest should install for this interface.
	Routes []Route `json:"routes,omitempty"`
}

// Address is an interface address and the gateway that goes with it.
type Address struct {
	Prefix  netip.Prefix `json:"prefix"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
}

// Route is a route of the CNI result.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// IPs returns the pod's addresses, IPv4 first, interface by interface.
func (a *Attachment) IPs() []netip.Addr {
	var v4, v6 []netip.Addr
	for _, ifc := range a.Interfaces {
		for _, ad := range ifc.Addresses {
			if ad.Prefix.Addr().Is4() {
				v4 = append(v4, ad.Prefix.Addr())
			} else {
				v6 = append(v6, ad.Prefix.Addr())
			}
		}
	}
	return append(v4, v6...)
}

// PodInfo is what CNI needs to know about the pod.
type PodInfo struct {
	Namespace, Name, UID string
	// PortMappings are the pod's hostPort mappings (portmap plugin).
	PortMappings []PortMapping
	// Bandwidth is the pod's ingress/egress limit (bandwidth plugin); nil
	// for none.
	Bandwidth *Bandwidth
}

// PortMapping is a hostPort mapping in the portmap plugin's format.
type PortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Bandwidth is the bandwidth plugin's capability arg (bits per second).
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}
