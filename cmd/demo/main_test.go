package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/internal/testenv"
)

// binDir builds trimsvc and client next to a link to the test's consul.
func binDir(t *testing.T) string {
	t.Helper()
	consul := testenv.ConsulBinary(t)
	dir := t.TempDir()
	for _, pkg := range []string{"github.com/trimkit/trimkit/cmd/trimsvc", "github.com/trimkit/trimkit/cmd/client"} {
		if _, err := testenv.Build(dir, pkg); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(consul)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, "consul")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDemoRunAndUpDown(t *testing.T) {
	bin := binDir(t)

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"run", "-bin", bin}, &out, &errOut); err != nil {
		t.Fatalf("demo run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"registered and passing in consul", "<- SIGTERM", "<- SIGKILL", "failures 0", "OK: no request failed",
		"phase 2:", "<- SIGSTOP: ejected by the client", "OK: no request failed while an instance was frozen"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}

	stateDir := filepath.Join(t.TempDir(), "run")
	out.Reset()
	if err := run(context.Background(), []string{"up", "-bin", bin, "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("demo up: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(statePath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	pids := []int{st.Consul.PID}
	for _, in := range st.Instances {
		pids = append(pids, in.PID)
	}
	if want, have := 4, len(pids); want != have {
		t.Fatalf("recorded %d processes, want %d", have, want)
	}
	for _, pid := range pids {
		if !proc.Alive(pid) {
			t.Errorf("pid %d not running after up", pid)
		}
	}
	t.Cleanup(func() { _ = down(config{state: stateDir}, &out) }) // also on failure

	out.Reset()
	if err := run(context.Background(), []string{"down", "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("demo down: %v\n%s", err, out.String())
	}
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("pid %d still running after down", pid)
		}
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir left behind: %v", err)
	}
	if want := "stopped"; strings.Count(out.String(), want) != 4 {
		t.Errorf("down output: %s", out.String())
	}
}
