package testenv

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/proc"
)

// Start starts bin with args. The process is killed, if it still runs, and
// reaped when the test ends (the test is over: a graceful stop would only
// slow it down); on failure its stderr goes to the test log.
func Start(t testing.TB, bin string, args ...string) *proc.Process {
	t.Helper()
	p, err := proc.Start(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reap(t, p, bin) })
	return p
}

// StartTrimsvc is proc.StartTrimsvc for a test: it fails the test when the
// instance does not come up, and kills and reaps it when the test ends.
func StartTrimsvc(t testing.TB, bin, consulAddr string, args ...string) *proc.Trimsvc {
	t.Helper()
	s, err := proc.StartTrimsvc(bin, consulAddr, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reap(t, s.Process, bin) })
	return s
}

func reap(t testing.TB, p *proc.Process, bin string) {
	p.Kill()
	if t.Failed() {
		t.Logf("%s stderr:\n%s", filepath.Base(bin), strings.Join(p.Lines(), "\n"))
	}
}
