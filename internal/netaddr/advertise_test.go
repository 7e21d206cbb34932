package netaddr_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/netaddr"
)

func TestAdvertise(t *testing.T) {
	for _, tc := range []struct {
		listen, advertise string
		wantHost          string
		wantPort          int
		wantErr           string
	}{
		{listen: "127.0.0.1:4321", wantHost: "127.0.0.1", wantPort: 4321},
		{listen: "10.1.2.3:4321", wantHost: "10.1.2.3", wantPort: 4321},
		{listen: "localhost:4321", wantHost: "localhost", wantPort: 4321},
		{listen: "[::1]:4321", wantHost: "::1", wantPort: 4321},
		{listen: "127.0.0.1:0", wantHost: "127.0.0.1", wantPort: 0},
		{listen: "[::]:4321", advertise: "svc.example", wantHost: "svc.example", wantPort: 4321},
		{listen: "[::]:4321", advertise: "192.0.2.1:7000", wantHost: "192.0.2.1", wantPort: 7000},
		{listen: "[::]:4321", advertise: "[2001:db8::1]:7000", wantHost: "2001:db8::1", wantPort: 7000},
		{listen: "[::]:4321", advertise: "2001:db8::1", wantHost: "2001:db8::1", wantPort: 4321},
		{listen: "[::]:4321", advertise: "192.0.2.1:0", wantErr: `advertise address "192.0.2.1:0": bad port`},
		{listen: "[::]:4321", advertise: "192.0.2.1:x", wantErr: "bad port"},
		{listen: "[::]:4321", advertise: ":7000", wantErr: `advertise address ":7000": empty host`},
		{listen: "nonsense", wantErr: `listen address "nonsense"`},
		{listen: "127.0.0.1:99999", wantErr: "bad port"},
	} {
		host, port, err := netaddr.Advertise(tc.listen, tc.advertise)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q, %q: want an error with %q, have %v", tc.listen, tc.advertise, tc.wantErr, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q, %q: %v", tc.listen, tc.advertise, err)
			continue
		}
		if want, have := net.JoinHostPort(tc.wantHost, strconv.Itoa(tc.wantPort)), net.JoinHostPort(host, strconv.Itoa(port)); want != have {
			t.Errorf("%q, %q: want %s, have %s", tc.listen, tc.advertise, want, have)
		}
	}
	// A wildcard listener: some address of the host that callers elsewhere
	// can dial (or 127.0.0.1 on a host without one).
	for _, listen := range []string{":4321", "0.0.0.0:4321", "[::]:4321"} {
		host, port, err := netaddr.Advertise(listen, "")
		ip := net.ParseIP(host)
		if err != nil || ip == nil || ip.IsUnspecified() || ip.To4() == nil || port != 4321 {
			t.Errorf("%s: advertised %s:%d (%v), want a specific IPv4 address and port 4321", listen, host, port, err)
		}
		if ip != nil && ip.IsLoopback() && host != "127.0.0.1" {
			t.Errorf("%s: advertised loopback %s other than 127.0.0.1", listen, host)
		}
	}
}
