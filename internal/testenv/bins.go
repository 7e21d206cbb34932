package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
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

// Binaries builds the project's commands for one test binary, each at most
// once and only when a test first asks for it, into a directory that Main
// removes when the tests are done. A test package holds one in a variable
// and runs its tests through its Main from TestMain.
type Binaries struct {
	mu    sync.Mutex
	dir   string
	built map[string]string // import path -> binary
}

// Main runs the tests and exits with their status, removing what was built.
func (b *Binaries) Main(m *testing.M) {
	code := m.Run()
	b.mu.Lock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	b.mu.Unlock()
	os.Exit(code)
}

// Path returns the binary of the main package pkg, building it the first
// time; a failed build fails tb.
func (b *Binaries) Path(tb testing.TB, pkg string) string {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if bin, ok := b.built[pkg]; ok {
		return bin
	}
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "trimkit-test-bin")
		if err != nil {
			tb.Fatal(err)
		}
		b.dir, b.built = dir, map[string]string{}
	}
	bin, err := Build(b.dir, pkg)
	if err != nil {
		tb.Fatal(err)
	}
	b.built[pkg] = bin
	return bin
}

// Trimsvc is Path of cmd/trimsvc.
func (b *Binaries) Trimsvc(tb testing.TB) string {
	tb.Helper()
	return b.Path(tb, "github.com/trimkit/trimkit/cmd/trimsvc")
}

// Client is Path of cmd/client.
func (b *Binaries) Client(tb testing.TB) string {
	tb.Helper()
	return b.Path(tb, "github.com/trimkit/trimkit/cmd/client")
}
