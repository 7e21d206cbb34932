package bench

import (
	"fmt"
	"os"
	"testing"

	"github.com/trimkit/trimkit/internal/proctest"
)

// trimsvcBin is the trimsvc built once, for the benchmarks that need real
// processes.
var trimsvcBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trimkit-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	trimsvcBin, err = proctest.Build(dir, "github.com/trimkit/trimkit/cmd/trimsvc")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
