package testenv

import (
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localjaeger"
)

// JaegerBinary returns the path of the jaeger binary: the one on PATH,
// else bin/jaeger at the top of the module (`make jaeger`). Without one
// the test fails when CI=true and is skipped otherwise.
func JaegerBinary(t testing.TB) string {
	t.Helper()
	return binary(t, "jaeger", "make jaeger")
}

// Jaeger starts a Jaeger (JaegerBinary) on free loopback ports for the
// test, stopped when it ends.
func Jaeger(t testing.TB) *localjaeger.Jaeger {
	t.Helper()
	j, err := localjaeger.Start(JaegerBinary(t), t.TempDir(), false, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop)
	return j
}
