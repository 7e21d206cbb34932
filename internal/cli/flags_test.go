package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
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
	for _, want := range []string{"usage: testcmd", "-some-flag  (env TESTCMD_SOME_FLAG, default def)", "a string flag", "TESTCMD_OTHER"} {
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
