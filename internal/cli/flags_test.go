package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/pki"
	"github.com/trimkit/trimkit/sd"
)

func TestParseEnvAndUsage(t *testing.T) {
	t.Setenv("TESTCMD_SOME_FLAG", "from-env")
	t.Setenv("TESTCMD_OTHER", "7")
	newFS := func() (*flag.FlagSet, *string, *int) {
		fs := flag.NewFlagSet("testcmd", flag.ContinueOnError)
		s := fs.String("some-flag", "def", "a string flag")
		n := fs.Int("other", 1, "an int flag")
		return fs, s, n
	}

	fs, s, n := newFS()
	var out bytes.Buffer
	if err := Parse(fs, []string{"-other", "3"}, "TESTCMD", "usage: testcmd", &out); err != nil {
		t.Fatal(err)
	}
	if want, have := "from-env", *s; want != have {
		t.Errorf("env: want %q, have %q", want, have)
	}
	if want, have := 3, *n; want != have {
		t.Errorf("command line wins over env: want %d, have %d", want, have)
	}

	fs, _, _ = newFS()
	out.Reset()
	if err := Parse(fs, []string{"-h"}, "TESTCMD", "usage: testcmd", &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("want flag.ErrHelp, have %v", err)
	}
	for _, want := range []string{"usage: testcmd", "-some-flag  (env TESTCMD_SOME_FLAG, default def)", "a string flag", "TESTCMD_OTHER",
		"Under `go run` every failure exits 1", "run bin/testcmd for these exit statuses"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}

	fs, _, _ = newFS()
	t.Setenv("TESTCMD_OTHER", "seven")
	if err := Parse(fs, nil, "TESTCMD", "usage: testcmd", &out); !errors.Is(err, ErrUsage) {
		t.Errorf("bad env value: want ErrUsage, have %v", err)
	}
}

// newTestFS is a flag set with one flag of each kind the commands use.
func newTestFS() *flag.FlagSet {
	fs := flag.NewFlagSet("testcmd", flag.ContinueOnError)
	fs.String("some-flag", "def", "a string flag")
	fs.Int("other", 1, "an int flag")
	fs.Duration("wait", 5*time.Second, "a duration flag")
	fs.Bool("on", true, "a bool flag")
	return fs
}

// parseAndReport parses args as a command named testcmd would, and returns
// what it printed to stdout, what Exit would print to stderr, the exit
// status and Parse's error.
func parseAndReport(args ...string) (stdout, stderr string, code int, err error) {
	var out, errOut bytes.Buffer
	err = Parse(newTestFS(), args, "TESTCMD", "usage: testcmd", &out)
	code = report(&errOut, "testcmd", err)
	return out.String(), errOut.String(), code, err
}

func TestBadFlagIsOneErrorAndAPointer(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // all Exit prints
	}{
		{[]string{"-other", "abc"}, "testcmd: invalid value \"abc\" for flag -other: parse error\nRun 'testcmd --help' for usage.\n"},
		{[]string{"-wait", "5"}, "testcmd: invalid value \"5\" for flag -wait: parse error (a number with a unit, such as 5s or 1m30s)\nRun 'testcmd --help' for usage.\n"},
		{[]string{"-nope"}, "testcmd: flag provided but not defined: -nope\nRun 'testcmd --help' for usage.\n"},
		{[]string{"-other"}, "testcmd: flag needs an argument: -other\nRun 'testcmd --help' for usage.\n"},
	} {
		stdout, stderr, code, err := parseAndReport(tc.args...)
		if !errors.Is(err, ErrUsage) {
			t.Errorf("%q: want ErrUsage, have %v", tc.args, err)
		}
		if stdout != "" {
			t.Errorf("%q: printed the usage, or more:\n%s", tc.args, stdout)
		}
		if stderr != tc.want || code != 2 {
			t.Errorf("%q: want exit 2 and\n%q\nhave exit %d and\n%q", tc.args, tc.want, code, stderr)
		}
	}
}

func TestHelpPrintsUsageOnceAndExitsZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		stdout, stderr, code, err := parseAndReport(arg)
		if !errors.Is(err, flag.ErrHelp) || code != 0 || stderr != "" {
			t.Errorf("%s: want flag.ErrHelp, exit 0, nothing on stderr; have %v, %d, %q", arg, err, code, stderr)
		}
		if n := strings.Count(stdout, "usage: testcmd"); n != 1 || !strings.Contains(stdout, "-wait  (env TESTCMD_WAIT, default 5s)") {
			t.Errorf("%s: want the usage once, have:\n%s", arg, stdout)
		}
	}
}

func TestBadEnvironmentNamesVariableAndValue(t *testing.T) {
	for _, tc := range []struct {
		key, value, want string
	}{
		{"TESTCMD_WAIT", "5", `environment TESTCMD_WAIT="5": invalid duration for -wait (a number with a unit, such as 5s or 1m30s)`},
		{"TESTCMD_OTHER", "seven", `environment TESTCMD_OTHER="seven": invalid integer for -other`},
		{"TESTCMD_OTHER", "99999999999999999999", `environment TESTCMD_OTHER="99999999999999999999": invalid integer for -other: value out of range`},
		{"TESTCMD_ON", "maybe", `environment TESTCMD_ON="maybe": invalid boolean for -on (true or false)`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Setenv(tc.key, tc.value)
			stdout, stderr, code, err := parseAndReport()
			if !errors.Is(err, ErrUsage) || code != 2 || stdout != "" {
				t.Errorf("want ErrUsage, exit 2 and no usage; have %v, %d, %q", err, code, stdout)
			}
			if want := "testcmd: " + tc.want + "\nRun 'testcmd --help' for usage.\n"; stderr != want {
				t.Errorf("want\n%q\nhave\n%q", want, stderr)
			}
		})
	}
	// The command line wins: a bad variable for a flag given there is never
	// read.
	t.Setenv("TESTCMD_WAIT", "5")
	if _, _, _, err := parseAndReport("-wait", "1s"); err != nil {
		t.Errorf("flag given on the command line: %v", err)
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		want string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{fmt.Errorf("%w: -n must be at least 1", ErrUsage), 2, "cmd: -n must be at least 1\nRun 'cmd --help' for usage.\n"},
		{errors.New("consul at http://127.0.0.1:8500: connection refused"), 1, "cmd: consul at http://127.0.0.1:8500: connection refused\n"},
	} {
		var w bytes.Buffer
		if code := report(&w, "cmd", tc.err); code != tc.code || w.String() != tc.want {
			t.Errorf("%v: want exit %d and %q, have exit %d and %q", tc.err, tc.code, tc.want, code, w.String())
		}
	}
}

// clearConsulEnv unsets the Consul CLI's variables for the test.
func clearConsulEnv(t *testing.T) {
	for _, key := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
		"CONSUL_TLS_SERVER_NAME", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "TESTCMD_CONSUL_ADDR"} {
		t.Setenv(key, "")
	}
}

func parseConsul(t *testing.T, args ...string) (sd.ConsulConfig, string, error) {
	t.Helper()
	fs := flag.NewFlagSet("testcmd", flag.ContinueOnError)
	var c sd.ConsulConfig
	ConsulFlags(fs, &c)
	var out bytes.Buffer
	err := Parse(fs, args, "TESTCMD", "usage: testcmd", &out)
	return c, out.String(), err
}

func TestConsulAddrHasOneDefault(t *testing.T) {
	clearConsulEnv(t)
	t.Setenv("CONSUL_HTTP_ADDR", "consul.example:8500") // never shown as the default
	_, help, err := parseConsul(t, "-h")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	i := strings.Index(help, "  -consul-addr  ")
	if i < 0 {
		t.Fatalf("no -consul-addr in\n%s", help)
	}
	entry, _, _ := strings.Cut(help[i+2:], "\n  -")
	want := "-consul-addr  (env TESTCMD_CONSUL_ADDR, default \"\")\n" +
		"      Consul agent HTTP address, host:port, or https://host:port for TLS (empty: CONSUL_HTTP_ADDR, else 127.0.0.1:8500)"
	if entry != want {
		t.Errorf("want\n%s\nhave\n%s", want, entry)
	}
	if strings.Contains(help, "consul.example") {
		t.Errorf("help shows CONSUL_HTTP_ADDR's value as a default:\n%s", help)
	}
}

// TestConsulAddrIsTheEffectiveOne: the address -consul-addr leaves in the
// config, and the one Consul is asked at, are what they were when the help
// showed CONSUL_HTTP_ADDR's value (or 127.0.0.1:8500) as the default.
func TestConsulAddrIsTheEffectiveOne(t *testing.T) {
	for _, tc := range []struct {
		name          string
		env, flagEnv  string // CONSUL_HTTP_ADDR, TESTCMD_CONSUL_ADDR
		args          []string
		address, want string // in the config; where NewClient says it asks
	}{
		{"nothing", "", "", nil, "127.0.0.1:8500", "http://127.0.0.1:8500"},
		{"empty flag", "", "", []string{"-consul-addr", ""}, "127.0.0.1:8500", "http://127.0.0.1:8500"},
		{"CONSUL_HTTP_ADDR", "consul.example:8500", "", nil, "consul.example:8500", "http://consul.example:8500"},
		{"CONSUL_HTTP_ADDR https", "https://consul.example:8501", "", nil, "https://consul.example:8501", "https://consul.example:8501"},
		{"empty flag, CONSUL_HTTP_ADDR", "consul.example:8500", "", []string{"-consul-addr="}, "consul.example:8500", "http://consul.example:8500"},
		{"flag", "consul.example:8500", "", []string{"-consul-addr", "10.0.0.1:8500"}, "10.0.0.1:8500", "http://10.0.0.1:8500"},
		{"env", "consul.example:8500", "10.0.0.2:8500", nil, "10.0.0.2:8500", "http://10.0.0.2:8500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearConsulEnv(t)
			t.Setenv("CONSUL_HTTP_ADDR", tc.env)
			t.Setenv("TESTCMD_CONSUL_ADDR", tc.flagEnv)
			c, _, err := parseConsul(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Address != tc.address {
				t.Errorf("address: want %q, have %q", tc.address, c.Address)
			}
			cl, err := c.NewClient()
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			if where := cl.(interface{ Address() string }).Address(); where != tc.want {
				t.Errorf("NewClient: want %s, have %s", tc.want, where)
			}
		})
	}
}

// TLS settings for a plain-HTTP agent are caught by NewClient, which the
// commands run on their flags: a usage error, before anything starts.
func TestConsulTLSNeedsHTTPS(t *testing.T) {
	ca, err := pki.NewCA(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	file := ca.File // a real CA: NewClient reads it
	for _, tc := range []struct {
		args  []string
		env   map[string]string
		wants string // in the error; "" for none
	}{
		{[]string{"-consul-ca-file", file}, nil, "(a CA file) but http://127.0.0.1:8500 is plain HTTP"},
		{[]string{"-consul-addr", "http://10.0.0.1:8500", "-consul-client-cert", file, "-consul-client-key", file}, nil, "(a client certificate) but http://10.0.0.1:8500 is plain HTTP"},
		{[]string{"-consul-addr", "10.0.0.1:8500", "-consul-tls-server-name", "consul"}, nil, "(a TLS server name) but http://10.0.0.1:8500 is plain HTTP"},
		{nil, map[string]string{"TESTCMD_CONSUL_CA_FILE": file}, "(a CA file) but http://127.0.0.1:8500"},
		{nil, map[string]string{"CONSUL_CACERT": file}, "(a CA file) but http://127.0.0.1:8500"},
		{[]string{"-consul-addr", "https://10.0.0.1:8501", "-consul-ca-file", file, "-consul-tls-server-name", "consul"}, nil, ""},
		{[]string{"-consul-ca-file", file}, map[string]string{"CONSUL_HTTP_SSL": "true"}, ""},
		{[]string{"-consul-ca-file", file}, map[string]string{"CONSUL_HTTP_ADDR": "https://10.0.0.1:8501"}, ""},
	} {
		clearConsulEnv(t)
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		c, _, err := parseConsul(t, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.NewClient()
		switch {
		case tc.wants == "" && err != nil:
			t.Errorf("%q %v: %v", tc.args, tc.env, err)
		case tc.wants != "" && (err == nil || !strings.Contains(err.Error(), tc.wants) || !strings.Contains(err.Error(), "needs an https:// address")):
			t.Errorf("%q %v: want an error saying %q and that TLS needs an https:// address, have %v", tc.args, tc.env, tc.wants, err)
		}
	}
}
