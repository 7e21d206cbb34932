package localconsul_test

import (
	"errors"
	"net"
	"syscall"
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
	defer a.Close()
	if a.HTTPAddr == taken.Addr().String() {
		t.Errorf("agent reports the taken address %s", a.HTTPAddr)
	}
}

// A killed agent's ports stay its own (no other process claims them; see
// portBlock), callers dialling it meanwhile are refused at once, and it
// restarts on them.
func TestKilledAgentRestartsOnItsPorts(t *testing.T) {
	a, err := localconsul.New(testenv.ConsulBinary(t), t.TempDir(), localconsul.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	addr := a.HTTPAddr
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial the down agent: %v, want connection refused", err)
	}
	if err := a.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if a.HTTPAddr != addr {
		t.Errorf("restarted on %s, want %s", a.HTTPAddr, addr)
	}
}
