package localconsul_test

import (
	"errors"
	"net"
	"os"
	"strings"
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

// The tail of a log for an error message leaves out DEBUG lines: a test
// polling a dev agent fills its log with them.
func TestLogTailLeavesOutDebugLines(t *testing.T) {
	a, err := localconsul.New(testenv.ConsulBinary(t), t.TempDir(), localconsul.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var log strings.Builder
	log.WriteString("[ERROR] agent.anti_entropy: failed to sync remote state\n")
	for range 1000 {
		log.WriteString("[DEBUG] agent.http: Request finished: method=GET url=/v1/health/service/trimsvc\n")
	}
	if err := os.WriteFile(a.LogPath, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	tail := a.LogTail()
	if strings.Contains(tail, "[DEBUG]") || !strings.Contains(tail, "failed to sync remote state") {
		t.Errorf("tail:\n%s", tail)
	}
}
