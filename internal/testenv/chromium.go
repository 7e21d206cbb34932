package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ChromiumBinary returns the path of Debian's chromium on PATH. Without
// one the test fails when CI=true (.ci/run installs it) and is skipped
// otherwise.
func ChromiumBinary(t testing.TB) string {
	t.Helper()
	return binary(t, "chromium", "apt-get install chromium")
}

// Chromium runs headless Chromium on url with args (--dump-dom,
// --screenshot=FILE...), in a profile of its own that the test removes,
// with what a closed network needs (no background networking, no
// component updates, no QUIC), and returns what it printed on stdout. As
// root it needs --no-sandbox.
func Chromium(t testing.TB, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, ChromiumBinary(t), append(all, url)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr)
	}
	return out
}

// ArtifactPath returns where a test keeps a file for people to look at
// after the run (a screenshot): $TRIMKIT_TEST_ARTIFACTS, else
// .run/test-artifacts at the top of the module, created if need be.
func ArtifactPath(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("TRIMKIT_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(ModuleRoot(t), ".run", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}
