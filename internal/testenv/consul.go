package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ConsulBinary returns the path of the consul binary: the one on PATH (make
// test puts bin/ there first), else bin/consul at the top of the module.
// Without one the test fails when CI=true and is skipped otherwise.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	return binary(t, "consul", "make consul")
}

// binary returns the path of the program name: the one on PATH, else
// bin/NAME at the top of the module. Without one the test fails when
// CI=true and is skipped otherwise, saying that target builds it (as
// make test does).
func binary(t testing.TB, name, target string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if root, ok := moduleRoot(); ok {
		p := filepath.Join(root, "bin", name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p
		}
	}
	msg := fmt.Sprintf("no %s binary on PATH or in bin/: run `%s` (or `make test`, which builds it)", name, target)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// moduleRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// ModuleRoot is the module's root directory, where go.mod is; tb fails
// when there is none above the working directory.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, ok := moduleRoot()
	if !ok {
		tb.Fatal("no go.mod above the working directory")
	}
	return dir
}
