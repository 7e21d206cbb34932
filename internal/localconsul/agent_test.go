package localconsul_test

import (
	"net"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

// A port taken between picking and binding (another test's process got it)
// makes the first start pick new ports instead of failing.
func TestStartRepicksATakenPort(t *testing.T) {
	a, err := localconsul.New(testenv.ConsulBinary(t), t.TempDir(), localconsul.Options{})
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", a.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := a.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if a.HTTPAddr == taken.Addr().String() {
		t.Errorf("agent reports the taken address %s", a.HTTPAddr)
	}
}
