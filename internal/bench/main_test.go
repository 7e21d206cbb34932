package bench

import (
	"testing"

	"github.com/trimkit/trimkit/internal/proctest"
)

// trimsvcBin is the trimsvc built once, for the benchmarks that need real
// processes.
var trimsvcBin string

func TestMain(m *testing.M) {
	proctest.RunMain(m, map[string]*string{"github.com/trimkit/trimkit/cmd/trimsvc": &trimsvcBin})
}
