package bench

import (
	"testing"

	"github.com/trimkit/trimkit/internal/testenv"
)

// bins builds trimsvc for the benchmarks that run real processes, only when
// one of them runs: `make test` runs no benchmark and builds nothing here.
var bins testenv.Binaries

func TestMain(m *testing.M) { bins.Main(m) }
