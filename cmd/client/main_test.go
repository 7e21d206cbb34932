package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
)

// bins builds the commands, once, for the tests that run them.
var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

func TestHelpListsEveryFlagWithEnv(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), context.Background(), []string{"-h"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("want flag.ErrHelp, have %v", err)
	}
	for _, name := range []string{"consul-addr", "consul-token", "service-name", "tags", "retry-max", "retry-timeout", "n", "c", "json",
		"balancer", "hedge-after", "rate", "duration", "read", "max-stale", "discovery", "dns-addr", "subset", "subset-caller", "throttle"} {
		env := "TRIMCLIENT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if want := fmt.Sprintf("-%s  (env %s, default ", name, env); !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the message
	}{
		{[]string{}, "TEXT to trim is missing"},
		{[]string{"a", "b"}, "one TEXT argument expected"},
		{[]string{"-n", "0", "x"}, "-n must be at least 1"},
		{[]string{"-c", "0", "x"}, "-c must be at least 1"},
		{[]string{"-retry-max", "-1", "x"}, "-retry-max -1: must not be negative"},
		{[]string{"-retry-timeout", "-1s", "x"}, "-retry-timeout -1s: must not be negative"},
		{[]string{"-service-name", "", "x"}, "-service-name must not be empty"},
		{[]string{"-n", "many", "x"}, "invalid value"},
		{[]string{"-balancer", "random", "x"}, `-balancer "random": must be "round-robin", "p2c" or "least-loaded"`},
		{[]string{"-hedge-after", "-1ms", "x"}, "-hedge-after -1ms: must not be negative"},
		{[]string{"-rate", "-5", "x"}, "-rate must not be negative"},
		{[]string{"-duration", "-1s", "x"}, "-duration must not be negative"},
		{[]string{"-n", "5", "-duration", "1s", "x"}, "-n and -duration both given"},
		{[]string{"-subset", "-3", "x"}, "-subset -3: must not be negative"},
		{[]string{"-subset", "20", "-subset-caller", "-1", "x"}, "-subset-caller -1: must not be negative"},
		{[]string{"-subset-caller", "4", "x"}, "-subset-caller 4: numbers a caller for Subset, which is 0"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), context.Background(), tc.args, &stdout, &stderr)
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want a usage error saying %q, have %v", tc.args, tc.want, err)
		}
	}
	// The process exits 2 for them.
	p := testenv.Start(t, bins.Client(t), "-retry-max", "-1", "x")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := p.Wait(ctx); err != nil || code != 2 {
		t.Errorf("want exit 2, have %d (%v)", code, err)
	}
}

func TestTrimAndLoadSummary(t *testing.T) {
	agent := testenv.Consul(t)
	var ids []string
	for range 2 {
		ids = append(ids, testenv.StartTrimsvc(t, bins.Trimsvc(t), agent.HTTPAddr).ID)
	}
	agent.WaitPassing("trimsvc", ids...)
	t.Setenv("TRIMCLIENT_CONSUL_ADDR", agent.HTTPAddr) // env works too

	exec := func(args ...string) (string, int) {
		t.Helper()
		p, code := runClient(t, args...)
		return p.Stdout(), code
	}

	out, code := exec(" he llo\t wor ld ")
	if want, have := "helloworld\n", out; code != 0 || want != have {
		t.Errorf("want %q (exit 0), have %q (exit %d)", want, have, code)
	}

	out, code = exec("-n", "200", "-c", "4", "-json", "a b")
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("not one JSON object: %q: %v", out, err)
	}
	for _, key := range []string{"requests", "failures", "rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "attempts", "per_instance",
		"start", "per_second", "first_failure", "last_failure"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("summary lacks key %q", key)
		}
	}
	if want, have := 14, len(raw); want != have {
		t.Errorf("summary has %d keys, want exactly %d: %s", have, want, out)
	}
	if string(raw["first_failure"]) != "null" || string(raw["last_failure"]) != "null" {
		t.Errorf("no failure: want null first and last failures, have %s", out)
	}
	var s loadgen.Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Requests != 200 || s.Failures != 0 || s.RPS <= 0 || s.P50ms <= 0 || s.P99ms < s.P50ms || s.P999ms < s.P99ms || s.MaxMs < s.P999ms || s.Attempts != 200 {
		t.Errorf("summary %+v", s)
	}
	calls := 0
	for i, sec := range s.PerSecond {
		if sec.Second != i || sec.Failures != 0 {
			t.Errorf("per_second[%d]: %+v", i, sec)
		}
		calls += sec.Calls
	}
	if start, err := time.Parse(time.RFC3339Nano, s.Start); err != nil || time.Since(start) > time.Minute || calls != 200 {
		t.Errorf("start %q (%v) and per_second %+v: want a start just now and the 200 calls", s.Start, err, s.PerSecond)
	}
	// Every request counted for the instance that answered it. (Round robin
	// is even once both connections are READY; while one still connects
	// the other takes the calls, so not exactly 100 each.)
	total := 0
	for _, id := range ids {
		if n := s.PerInstance[id]; n < 80 || n > 120 {
			t.Errorf("%s answered %d, want about 100", id, n)
		}
		total += s.PerInstance[id]
	}
	if want, have := 200, total; want != have || len(s.PerInstance) != 2 {
		t.Errorf("per instance: want %d requests over the 2 instances, have %v", want, s.PerInstance)
	}

	// Open loop at a rate, for a duration, through p2c with hedging.
	out, code = exec("-rate", "200", "-duration", "500ms", "-balancer", "p2c", "-hedge-after", "50ms", "-json", "a b")
	if code != 0 {
		t.Errorf("open loop: exit %d", code)
	}
	s = loadgen.Summary{}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Requests < 90 || s.Requests > 101 || s.Failures != 0 || s.Attempts < s.Requests {
		t.Errorf("open loop of 200/s for 500ms: summary %+v", s)
	}

	out, code = exec("-n", "10", "x")
	if code != 0 {
		t.Errorf("text summary: exit %d", code)
	}
	for _, want := range []string{"requests:  10", "failures:  0", "attempts:  10", "p99.9", "max", ids[0], ids[1]} {
		if !strings.Contains(out, want) {
			t.Errorf("text summary lacks %q:\n%s", want, out)
		}
	}

	// Failures make exit status 1.
	if _, code := exec("-service-name", "absent", "x"); code != 1 {
		t.Errorf("no instances: want exit 1, have %d", code)
	}
	p, code := runClient(t, "-service-name", "absent", "-n", "5", "x")
	if code != 1 {
		t.Errorf("load with failures: want exit 1, have %d", code)
	}
	// Where the failures were, and what they said, once.
	for _, want := range []string{"failures by second since the start, ", "  0s        5 of 5 calls failed", "first failure: ", "last failure:  "} {
		if !strings.Contains(p.Stdout(), want) {
			t.Errorf("load with failures: the summary lacks %q:\n%s", want, p.Stdout())
		}
	}
	if lines := p.Lines(); len(lines) != 2 || !strings.HasPrefix(lines[0], `failure: no instance known (3 attempts): no passing instance of service "absent" in consul at `) {
		t.Errorf("load with failures: stderr\n%s", strings.Join(lines, "\n"))
	}
	p, code = runClient(t, "-service-name", "absent", "-n", "5", "-json", "x")
	s = loadgen.Summary{}
	if err := json.Unmarshal([]byte(p.Stdout()), &s); err != nil || code != 1 {
		t.Fatalf("exit %d, %v: %s", code, err, p.Stdout())
	}
	if len(s.PerSecond) != 1 || s.PerSecond[0] != (loadgen.Second{Second: 0, Calls: 5, Failures: 5}) || s.FirstFailure == nil || s.LastFailure == nil ||
		s.FirstFailure.Seconds <= 0 || s.LastFailure.Seconds < s.FirstFailure.Seconds || s.LastFailure.Time < s.FirstFailure.Time {
		t.Errorf("load with failures: per_second %+v, first %+v, last %+v", s.PerSecond, s.FirstFailure, s.LastFailure)
	}
}

// TestFlagAndEnvErrorsExit: what the process prints and its exit status,
// for bad flags, bad environment variables, TLS files for a plain-HTTP
// Consul, and --help.
func TestFlagAndEnvErrorsExit(t *testing.T) {
	for _, key := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
		"CONSUL_TLS_SERVER_NAME", "TRIMCLIENT_CONSUL_ADDR", "TRIMCLIENT_CONSUL_CA_FILE"} {
		t.Setenv(key, "")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("unread"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pointer = "Run 'client --help' for usage."
	testenv.CheckUsageErrors(t, bins.Client(t), []testenv.UsageError{
		{Args: []string{"-n", "abc", "x"},
			Stderr: []string{`client: invalid value "abc" for flag -n: parse error`, pointer}},
		{Args: []string{"-duration", "5", "x"},
			Stderr: []string{`client: invalid value "5" for flag -duration: parse error (a number with a unit, such as 5s or 1m30s)`, pointer}},
		{Args: []string{"-nonsense", "x"},
			Stderr: []string{"client: flag provided but not defined: -nonsense", pointer}},
		{Args: []string{"x"}, Env: "TRIMCLIENT_DURATION=5",
			Stderr: []string{`client: environment TRIMCLIENT_DURATION="5": invalid duration for -duration (a number with a unit, such as 5s or 1m30s)`, pointer}},
		{Args: []string{"-consul-ca-file", ca, "x"},
			Stderr: []string{"client: consul TLS settings given (a CA file) but http://127.0.0.1:8500 is plain HTTP: TLS needs an https:// address (or CONSUL_HTTP_SSL=true)", pointer}},
		{Args: []string{"-datacenters", "dc1,dc2,dc1", "x"},
			Stderr: []string{`client: -datacenters ["dc1" "dc2" "dc1"]: datacenter "dc1" named twice`, pointer}},
		{Args: []string{"-datacenters", "dc1,dc2", "-overprovisioning", "0.5", "x"},
			Stderr: []string{`client: -overprovisioning 0.5: must be within [1, 100] (0 means the default, 1.4)`, pointer}},
		{Args: []string{"-locality-zone", "a", "-discovery", "dns", "x"},
			Stderr: []string{`client: -locality-zone "a": a locality needs Consul discovery (the HTTP API)`, pointer}},
		{Args: []string{"-datacenters", "dc1,dc2", "-subset", "3", "x"},
			Stderr: []string{`client: -subset 3: not with more than one datacenter, nor a locality, nor Near`, pointer}},
		{Args: []string{"-near", "_agent", "-discovery", "dns", "x"},
			Stderr: []string{`client: -near "_agent": needs Consul discovery (the HTTP API)`, pointer}},
		{Args: []string{"-near", "rack/1", "x"},
			Stderr: []string{`client: -near "rack/1": must be "_agent" or a node's name`, pointer}},
	})
	// In the process, the TLS files for a plain-HTTP address are a usage
	// error like the others.
	err := run(context.Background(), context.Background(), []string{"-consul-addr", "http://127.0.0.1:8500", "-consul-ca-file", ca, "x"}, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "https://") {
		t.Errorf("TLS files for http://: want a usage error saying https://, have %v", err)
	}
	testenv.CheckHelp(t, bins.Client(t), "usage: client", `-consul-addr  (env TRIMCLIENT_CONSUL_ADDR, default "")`)
}
