package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/proc"
)

// Build builds the main package pkg into dir and returns the binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Process is a running command of a test.
type Process = proc.Process

// Start starts bin with args. The process is killed, if still running, and
// reaped when the test ends; on failure its stderr goes to the test log.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p, err := proc.Start(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), strings.Join(p.Lines(), "\n"))
		}
	})
	return p
}

// LogValue returns the value of key in a logfmt line, or "".
func LogValue(line, key string) string { return proc.LogValue(line, key) }

// RunMain is a TestMain body: it builds each main package in bins (import
// path -> where to store the binary's path) into a temporary directory, runs
// the tests and exits with their status, removing the directory.
func RunMain(m *testing.M, bins map[string]*string) {
	os.Exit(runMain(m, bins))
}

func runMain(m *testing.M, bins map[string]*string) int {
	dir, err := os.MkdirTemp("", "trimkit-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for pkg, path := range bins {
		if *path, err = Build(dir, pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}
