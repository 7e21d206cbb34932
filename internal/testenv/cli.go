package testenv

import (
	"context"
	"strings"
	"testing"
	"time"
)

// UsageError is a command line, and environment, that a command must
// refuse as a usage error: exit status 2, exactly Stderr on stderr, and
// nothing on stdout.
type UsageError struct {
	Args   []string
	Env    string // KEY=value, set for this run only; "" for none
	Stderr []string
}

// CheckUsageErrors runs bin once per case and checks what it prints and
// its exit status.
func CheckUsageErrors(t *testing.T, bin string, cases []UsageError) {
	t.Helper()
	for _, tc := range cases {
		key, value, withEnv := strings.Cut(tc.Env, "=")
		if withEnv {
			t.Setenv(key, value)
		}
		code, stderr, stdout := run(t, bin, tc.Args...)
		if code != 2 {
			t.Errorf("%q %s: want exit 2, have %d", tc.Args, tc.Env, code)
		}
		if have, want := strings.Join(stderr, "\n"), strings.Join(tc.Stderr, "\n"); have != want {
			t.Errorf("%q %s: want stderr\n%s\nhave\n%s", tc.Args, tc.Env, want, have)
		}
		if stdout != "" {
			t.Errorf("%q %s: stdout has\n%s", tc.Args, tc.Env, stdout)
		}
		if withEnv {
			t.Setenv(key, "")
		}
	}
}

// CheckHelp checks that bin's -h and --help print the usage once on
// stdout, with want in it, nothing on stderr, and exit 0.
func CheckHelp(t *testing.T, bin, usage, want string) {
	t.Helper()
	for _, arg := range []string{"-h", "--help"} {
		code, stderr, stdout := run(t, bin, arg)
		if code != 0 {
			t.Errorf("%s: want exit 0, have %d", arg, code)
		}
		if len(stderr) != 0 {
			t.Errorf("%s: stderr has %q", arg, stderr)
		}
		if strings.Count(stdout, usage) != 1 || !strings.Contains(stdout, want) {
			t.Errorf("%s: want the usage once on stdout, with %q, have\n%s", arg, want, stdout)
		}
	}
}

// run runs bin with args to its end, at most 10s, and returns its exit
// status and what it printed.
func run(t *testing.T, bin string, args ...string) (code int, stderr []string, stdout string) {
	t.Helper()
	p := Start(t, bin, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return code, p.Lines(), p.Stdout()
}
