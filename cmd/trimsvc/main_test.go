package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/cli"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// bins builds trimsvc, once, for the tests that run it as a process.
var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }

func startInstance(t *testing.T, consulAddr string, args ...string) *proc.Trimsvc {
	t.Helper()
	return testenv.StartTrimsvc(t, bins.Trimsvc(t), consulAddr, args...)
}

// eventually polls cond every 50ms until it holds or timeout passes, and
// returns how long that took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	var lastErr error
	for time.Since(start) < timeout {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v (last error: %v)", what, timeout, lastErr)
	return 0
}

func waitExit(t *testing.T, p *proc.Process, timeout time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestHelpListsEveryFlagWithEnv(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("want flag.ErrHelp, have %v", err)
	}
	for _, name := range []string{"grpc-addr", "http-addr", "advertise-addr", "consul-addr", "consul-token",
		"service-name", "service-id", "tags", "check-interval", "deregister-after", "resync-interval",
		"register-timeout", "drain", "max-input-bytes", "addr-file",
		"max-connections", "max-pending-connections", "first-byte-timeout", "handshake-timeout"} {
		env := "TRIMSVC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if want := fmt.Sprintf("-%s  (env %s, default ", name, env); !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, want := range []string{"default :8975", "default 127.0.0.1:8976", "default 5s", "default 1m0s", "default 10s", "default 30s", "default 2s", "default 1048576", "default trimsvc"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-check-interval", "0s"},
		{"-max-input-bytes", "-1"},
		{"-max-connections", "0"},
		{"-max-pending-connections", "-1"},
		{"-max-connections", "10", "-max-pending-connections", "11"},
		{"-first-byte-timeout", "0s"},
		{"-handshake-timeout", "-1s"},
		{"-grpc-addr", "nonsense"},
		{"-drain", "soon"},
		{"extra"},
		{"-service-id", "x/../trimsvc-127.0.0.1-42409"},
		{"-service-id", ".."},
		{"-service-name", "a/b"},
		{"-tags", "a b"},
		{"-advertise-addr", "a/b:80"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("%q: want a usage error, have %v", args, err)
		}
	}
	// The process exits 2 for them.
	p := testenv.Start(t, bins.Trimsvc(t), "-check-interval", "-1s")
	if want, have := 2, waitExit(t, p, 10*time.Second); want != have {
		t.Errorf("exit code: want %d, have %d", want, have)
	}
}
