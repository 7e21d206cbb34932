package proctest

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/proc"
)

// Trimsvc is a running trimsvc process of a test.
type Trimsvc = proc.Trimsvc

// StartTrimsvc is proc.StartTrimsvc for a test: it fails the test when the
// instance does not come up, and kills and reaps it when the test ends.
func StartTrimsvc(t testing.TB, bin, consulAddr string, args ...string) Trimsvc {
	t.Helper()
	s, err := proc.StartTrimsvc(bin, consulAddr, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), strings.Join(s.Lines(), "\n"))
		}
	})
	return *s
}
