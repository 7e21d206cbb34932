package main

import (
	"net"
	"testing"
)

func TestAdvertised(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4zero, Port: 4321}
	for _, tc := range []struct {
		grpcAddr, advertise string
		wantHost            string
		wantPort            int
		wantErr             bool
	}{
		{grpcAddr: "127.0.0.1:0", wantHost: "127.0.0.1", wantPort: 4321},
		{grpcAddr: "10.1.2.3:0", wantHost: "10.1.2.3", wantPort: 4321},
		{grpcAddr: ":0", advertise: "svc.example", wantHost: "svc.example", wantPort: 4321},
		{grpcAddr: ":0", advertise: "192.0.2.1:7000", wantHost: "192.0.2.1", wantPort: 7000},
		{grpcAddr: ":0", advertise: "192.0.2.1:0", wantErr: true},
		{grpcAddr: ":0", advertise: ":7000", wantErr: true},
	} {
		c := config{grpcAddr: tc.grpcAddr, advertiseAddr: tc.advertise}
		host, port, err := c.advertised(bound)
		if (err != nil) != tc.wantErr {
			t.Errorf("%+v: error %v, want error %v", tc, err, tc.wantErr)
			continue
		}
		if tc.wantErr {
			continue
		}
		if host != tc.wantHost || port != tc.wantPort {
			t.Errorf("%+v: want %s:%d, have %s:%d", tc, tc.wantHost, tc.wantPort, host, port)
		}
	}
	// Unspecified listen host: some non-loopback address, or 127.0.0.1.
	host, _, err := config{grpcAddr: ":0"}.advertised(bound)
	if ip := net.ParseIP(host); err != nil || ip == nil || ip.IsUnspecified() {
		t.Errorf("wildcard listen: advertised %q (%v)", host, err)
	}
}

func TestServiceID(t *testing.T) {
	c := config{serviceName: "trimsvc"}
	if want, have := "trimsvc-10.0.0.1-8975", c.serviceIDFor("10.0.0.1", 8975); want != have {
		t.Errorf("want %s, have %s", want, have)
	}
	c.serviceID = "mine"
	if want, have := "mine", c.serviceIDFor("10.0.0.1", 8975); want != have {
		t.Errorf("want %s, have %s", want, have)
	}
}
