package pollsd_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/trimkit/trimkit/internal/pollsd"
	"github.com/trimkit/trimkit/sd"
)

// NewInstancer refuses what cannot work with an error, never a panic,
// before it looks anything up.
func TestNewInstancerErrors(t *testing.T) {
	logger := log.NewNopLogger()
	for _, tc := range []struct {
		name, dnsAddr, service string
		tags                   []string
		logger                 log.Logger
		want                   string // in the error
	}{
		{"nil logger", "127.0.0.1:8600", "trimsvc", nil, nil, "logger"},
		{"empty service name", "127.0.0.1:8600", "", nil, logger, "service name"},
		{"service name not a DNS label", "127.0.0.1:8600", "trim.svc", nil, logger, "DNS label"},
		{"two tags", "127.0.0.1:8600", "trimsvc", []string{"a", "b"}, logger, "one tag"},
		{"DNS address without a port", "127.0.0.1", "trimsvc", nil, logger, "DNS address"},
	} {
		var (
			d   *pollsd.Instancer
			err error
		)
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: panicked: %v", tc.name, p)
				}
			}()
			d, err = pollsd.NewInstancer(tc.dnsAddr, tc.service, tc.tags, time.Hour, tc.logger)
		}()
		if err == nil {
			if d != nil {
				d.Stop()
			}
			t.Errorf("%s: want an error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error about %s, have %v", tc.name, tc.want, err)
		}
	}
}

// NoInstances names the service, its tag and the DNS server, and the last
// lookup's error.
func TestDNSInstancerNoInstances(t *testing.T) {
	// A UDP port nothing listens on: the lookup fails, at once.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	d, err := pollsd.NewInstancer(addr, "trimsvc", []string{"blue"}, time.Hour, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	err = d.NoInstances()
	var nie *sd.NoInstancesError
	if !errors.As(err, &nie) {
		t.Fatalf("want an *sd.NoInstancesError, have %T %v", err, err)
	}
	if nie.Service != "trimsvc" || len(nie.Tags) != 1 || nie.Tags[0] != "blue" || nie.Where != "consul's DNS interface at "+addr {
		t.Errorf("NoInstancesError %+v: want trimsvc, [blue], consul's DNS interface at %s", nie, addr)
	}
	if nie.Discovery == nil || !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("want the lookup's error and errors.Is ErrNoEndpoints, have %+v", nie)
	}
	want := `no passing instance of service "trimsvc" with tags ["blue"] in consul's DNS interface at ` + addr + ` (its last query failed: `
	if have := err.Error(); !strings.HasPrefix(have, want) || !strings.HasSuffix(have, ": no endpoints available") {
		t.Errorf("message:\nwant %s...: no endpoints available\nhave %s", want, have)
	}
}
