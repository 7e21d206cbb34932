package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localjaeger"
)

// Jaeger starts a Jaeger (bin/jaeger, `make jaeger`) on free loopback
// ports for the test, stopped when it ends. Without the binary the test
// fails when CI=true and is skipped otherwise.
func Jaeger(t testing.TB) *localjaeger.Jaeger {
	t.Helper()
	bin, err := exec.LookPath("jaeger")
	if err != nil {
		if root, ok := moduleRoot(); ok {
			if p := filepath.Join(root, "bin", "jaeger"); fileExists(p) {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		msg := "no jaeger binary on PATH or in bin/: run `make jaeger` (or `make test`, which builds it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	j, err := localjaeger.Start(bin, t.TempDir(), false, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop)
	return j
}

func fileExists(p string) bool {
	info, err := os.Stat(p)
	return err == nil && !info.IsDir()
}
