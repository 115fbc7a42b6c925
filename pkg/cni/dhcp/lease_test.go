package dhcp

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLeaseValidate(t *testing.T) {
	base := func() Lease {
		return Lease{MAC: vmMAC, IP: net.IPNet{IP: leaseIP, Mask: net.CIDRMask(24, 32)}, ServerID: gatewayIP}
	}
	tests := []struct {
		name    string
		mutate  func(l *Lease)
		wantErr string // "" = valid
	}{
		{"minimal", func(l *Lease) {}, ""},
		{"no MAC", func(l *Lease) { l.MAC = nil }, "MAC"},
		{"EUI-64 MAC", func(l *Lease) { l.MAC = append(vmMAC, 0, 0) }, "MAC"},
		{"multicast MAC", func(l *Lease) { l.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "multicast"},
		{"IPv6 address", func(l *Lease) { l.IP.IP = net.ParseIP("fd00::10") }, "not an IPv4 address"},
		{"no IP", func(l *Lease) { l.IP.IP = nil }, "not an IPv4 address"},
		{"IPv6 mask", func(l *Lease) { l.IP.Mask = net.CIDRMask(64, 128) }, "mask"},
		{"no mask", func(l *Lease) { l.IP.Mask = nil }, "mask"},
		{"non-canonical mask", func(l *Lease) { l.IP.Mask = net.IPv4Mask(255, 0, 255, 0) }, "mask"},
		{"16-byte IPv4 mask", func(l *Lease) { l.IP.Mask = net.CIDRMask(120, 128) }, ""},
		{"zero IP", func(l *Lease) { l.IP.IP = net.IPv4zero }, "cannot be leased"},
		{"multicast IP", func(l *Lease) { l.IP.IP = net.IPv4(224, 0, 0, 1) }, "cannot be leased"},
		{"no server ID", func(l *Lease) { l.ServerID = nil }, "server ID"},
		{"server ID is the lease", func(l *Lease) { l.ServerID = leaseIP }, "server ID"},
		{"IPv6 server ID", func(l *Lease) { l.ServerID = net.ParseIP("fd00::1") }, "server ID"},
		{"IPv6 gateway", func(l *Lease) { l.Gateway = net.ParseIP("fd00::1") }, "gateway"},
		{"IPv6 route", func(l *Lease) {
			l.Routes = []Route{{Dst: net.IPNet{IP: net.ParseIP("fd00::"), Mask: net.CIDRMask(64, 128)}}}
		}, "route 0"},
		{"IPv6 route gateway", func(l *Lease) {
			l.Routes = []Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gateway: net.ParseIP("fd00::1")}}
		}, "route 0: gateway"},
		{"MTU too small", func(l *Lease) { l.MTU = 67 }, "MTU"},
		{"MTU too large", func(l *Lease) { l.MTU = 70000 }, "MTU"},
		{"IPv6 DNS", func(l *Lease) { l.DNS = []net.IP{net.ParseIP("fd00::53")} }, "DNS server 0"},
		{"empty search domain", func(l *Lease) { l.Search = []string{""} }, "search domain 0"},
		{"long hostname", func(l *Lease) { l.Hostname = strings.Repeat("a", 256) }, "hostname"},
		{"lease time below 1s", func(l *Lease) { l.LeaseTime = time.Millisecond }, "lease time"},
		{"negative lease time", func(l *Lease) { l.LeaseTime = -time.Hour }, "lease time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := base()
			tt.mutate(&l)
			_, err := l.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want ErrInvalidConfig mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestLeaseValidateNormalises(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	in := Lease{
		MAC:      mac,
		IP:       net.IPNet{IP: net.ParseIP("10.250.1.10"), Mask: net.CIDRMask(120, 128)}, // 16-byte forms
		ServerID: net.ParseIP("10.250.1.1"),
		Routes:   []Route{{Dst: net.IPNet{IP: net.ParseIP("10.250.9.9"), Mask: net.CIDRMask(16, 32)}}},
		DNS:      []net.IP{net.ParseIP("10.250.0.10")},
	}
	l, err := in.validate()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.IP.IP) != 4 || len(l.IP.Mask) != 4 || len(l.ServerID) != 4 || len(l.DNS[0]) != 4 {
		t.Errorf("addresses not 4-byte: %d %d %d %d", len(l.IP.IP), len(l.IP.Mask), len(l.ServerID), len(l.DNS[0]))
	}
	if l.IP.String() != "10.250.1.10/24" {
		t.Errorf("IP = %s", l.IP.String())
	}
	if got := l.Routes[0].Dst.String(); got != "10.250.0.0/16" {
		t.Errorf("route destination = %s, want 10.250.0.0/16", got)
	}
	if l.LeaseTime != DefaultLeaseTime {
		t.Errorf("lease time = %s, want default %s", l.LeaseTime, DefaultLeaseTime)
	}
	mac[5] = 9 // the server keeps its own copy
	if l.MAC[5] != 1 {
		t.Error("validate aliases the caller's MAC")
	}
}

func TestStartRejectsBadConfigWithoutRoot(t *testing.T) {
	good := Lease{MAC: vmMAC, IP: net.IPNet{IP: leaseIP, Mask: net.CIDRMask(24, 32)}, ServerID: gatewayIP}
	tests := []struct {
		name    string
		cfg     Config
		invalid bool // wraps ErrInvalidConfig
	}{
		{"no interface", Config{Lease: good}, true},
		{"bad lease", Config{Interface: "lo", Lease: Lease{}}, true},
		{"multicast server MAC", Config{Interface: "lo", Lease: good, ServerMAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}, true},
		{"missing interface", Config{Interface: "vmpod-no-such-if", Lease: good}, false},
		{"missing netns", Config{NetNSPath: "/nonexistent/netns", Interface: "lo", Lease: good}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded")
			}
			if errors.Is(err, ErrInvalidConfig) != tt.invalid {
				t.Errorf("err = %v; ErrInvalidConfig: %v, want %v", err, errors.Is(err, ErrInvalidConfig), tt.invalid)
			}
		})
	}
}
