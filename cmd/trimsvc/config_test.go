package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/testenv"
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

// clearConsulEnv unsets the Consul CLI's variables and trimsvc's own
// -consul-* ones, for the test and the processes it starts.
func clearConsulEnv(t *testing.T) {
	for _, key := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
		"CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "TRIMSVC_CONSUL_ADDR", "TRIMSVC_CONSUL_CA_FILE"} {
		t.Setenv(key, "")
	}
}

func TestConcurrencyLimitFlag(t *testing.T) {
	for arg, want := range map[string]string{"adaptive": "<nil>", "off": "no concurrency limit", "12": "fixed concurrency limit 12"} {
		c := config{concurrencyLimit: arg}
		l, err := c.concurrency()
		got := fmt.Sprint(l)
		if l != nil && l.Limit() != math.MaxInt {
			got = fmt.Sprintf("%v %d", l, l.Limit())
		}
		if err != nil || got != want {
			t.Errorf("-concurrency-limit %s: %s, %v; want %s", arg, got, err, want)
		}
	}
}

func TestConfigConsulAddrDefault(t *testing.T) {
	clearConsulEnv(t)
	c, err := parseConfig(nil, &bytes.Buffer{})
	if err != nil || c.consul.Address != "127.0.0.1:8500" {
		t.Errorf("no -consul-addr: want 127.0.0.1:8500, have %q (%v)", c.consul.Address, err)
	}
	t.Setenv("CONSUL_HTTP_ADDR", "consul.example:8500")
	for _, args := range [][]string{nil, {"-consul-addr", ""}} {
		c, err = parseConfig(args, &bytes.Buffer{})
		if err != nil || c.consul.Address != "consul.example:8500" {
			t.Errorf("%q: want CONSUL_HTTP_ADDR's consul.example:8500, have %q (%v)", args, c.consul.Address, err)
		}
	}
}

func TestConfigConsulTLSOverPlainHTTPIsAUsageError(t *testing.T) {
	clearConsulEnv(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("unread"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-consul-ca-file", ca},
		{"-consul-addr", "http://127.0.0.1:8500", "-consul-ca-file", ca},
		{"-consul-addr", "127.0.0.1:8500", "-consul-tls-server-name", "consul"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "plain HTTP") || !strings.Contains(err.Error(), "https://") {
			t.Errorf("%q: want a usage error saying TLS needs an https:// address, have %v", args, err)
		}
	}
}

// TestFlagAndEnvErrorsExit: what the process prints and its exit status,
// for bad flags, bad environment variables and --help.
func TestFlagAndEnvErrorsExit(t *testing.T) {
	clearConsulEnv(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("unread"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pointer = "Run 'trimsvc --help' for usage."
	testenv.CheckUsageErrors(t, bins.Trimsvc(t), []testenv.UsageError{
		{Args: []string{"-check-interval", "5"},
			Stderr: []string{`trimsvc: invalid value "5" for flag -check-interval: parse error (a number with a unit, such as 5s or 1m30s)`, pointer}},
		{Args: []string{"-max-input-bytes", "abc"},
			Stderr: []string{`trimsvc: invalid value "abc" for flag -max-input-bytes: parse error`, pointer}},
		{Args: []string{"-retry-max", "3"},
			Stderr: []string{"trimsvc: flag provided but not defined: -retry-max", pointer}},
		{Env: "TRIMSVC_CHECK_INTERVAL=5",
			Stderr: []string{`trimsvc: environment TRIMSVC_CHECK_INTERVAL="5": invalid duration for -check-interval (a number with a unit, such as 5s or 1m30s)`, pointer}},
		{Args: []string{"-check-interval", "-1s"},
			Stderr: []string{"trimsvc: -check-interval must be positive, got -1s", pointer}},
		{Args: []string{"-concurrency-limit", "lots"},
			Stderr: []string{`trimsvc: -concurrency-limit "lots": want adaptive, off or a positive number of calls`, pointer}},
		{Env: "TRIMSVC_CONCURRENCY_LIMIT=-3",
			Stderr: []string{`trimsvc: -concurrency-limit "-3": want adaptive, off or a positive number of calls`, pointer}},
		{Args: []string{"-consul-ca-file", ca},
			Stderr: []string{"trimsvc: consul TLS settings given (a CA file) but http://127.0.0.1:8500 is plain HTTP: TLS needs an https:// address (or CONSUL_HTTP_SSL=true)", pointer}},
	})
	testenv.CheckHelp(t, bins.Trimsvc(t), "usage: trimsvc", `-consul-addr  (env TRIMSVC_CONSUL_ADDR, default "")`)
}
