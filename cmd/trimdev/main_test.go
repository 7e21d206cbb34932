package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localjaeger"
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

func TestDemoRun(t *testing.T) {
	bin := binDir(t)

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"run", "-bin", bin}, &out, &errOut); err != nil {
		t.Fatalf("trimdev run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"registered and passing in consul", "<- SIGTERM", "<- SIGKILL", "failures 0", "OK: no request failed",
		"phase 2:", "<- SIGSTOP: ejected by the client", "OK: no request failed while an instance was frozen"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("trimdev output lacks %q:\n%s", want, out.String())
		}
	}

}

// logTails logs the end of every log file under dir, for a failed test.
func logTails(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s (last %d lines):\n%s", path, min(40, len(lines)), strings.Join(lines[max(0, len(lines)-40):], "\n"))
		return nil
	})
}

// callThroughClientEnv calls the cluster's instances as its printed
// walkthrough says: with the variables of client.env (client agent 2, the
// caller's token, the service CA and a client certificate of its own).
func callThroughClientEnv(t *testing.T, bin, stateDir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "client.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			t.Fatalf("client.env: %q", line)
		}
		t.Setenv(k, v)
	}
	p := testenv.Start(t, filepath.Join(bin, "client"), " a b ")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, err := p.Wait(ctx); err != nil || code != 0 || p.Stdout() != "ab\n" {
		t.Errorf("a call over mutual TLS with client.env: exit %d (%v), %q\n%s", code, err, p.Stdout(), strings.Join(p.Lines(), "\n"))
	}
}

// TestUpClusterDown leaves a dev agent, then a cluster, running with their
// instances, and stops exactly what it started.
func TestUpClusterDown(t *testing.T) {
	bin := binDir(t)
	for _, tc := range []struct {
		cmd        string
		processes  int
		wantOutput []string
	}{
		{"up", 1 + 3, []string{"up: consul dev agent"}},
		{"cluster", 5 + 3, []string{"server-1", "client-2", "callers ask client-2", "kill -state STATE server-",
			"restart -state STATE server-", "restart -state STATE client-1", "--cert"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			var out, errOut bytes.Buffer
			stateDir := filepath.Join(t.TempDir(), "run")
			t.Cleanup(func() { _ = down(config{state: stateDir}, &out) }) // also on failure
			t.Cleanup(func() {                                            // before down, which removes them
				if t.Failed() {
					logTails(t, stateDir)
				}
			})
			if err := run(context.Background(), []string{tc.cmd, "-bin", bin, "-state", stateDir}, &out, &errOut); err != nil {
				t.Fatalf("trimdev %s: %v\n%s", tc.cmd, err, out.String())
			}
			for _, want := range tc.wantOutput {
				want = strings.ReplaceAll(want, "STATE", stateDir)
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			b, err := os.ReadFile(statePath(stateDir))
			if err != nil {
				t.Fatal(err)
			}
			var st state
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			var pids []int
			for _, p := range append(st.Consul, st.Instances...) {
				pids = append(pids, p.PID)
			}
			if want, have := tc.processes, len(pids); want != have {
				t.Fatalf("recorded %d processes, want %d", have, want)
			}
			for _, pid := range pids {
				if !proc.Alive(pid) {
					t.Errorf("pid %d not running after %s", pid, tc.cmd)
				}
			}
			member := func(args ...string) string { return runMember(t, stateDir, &errOut, args...) }
			// An instance killed starts again on its address.
			before := st.Instances[1]
			member("kill", before.Name)
			if proc.Alive(before.PID) {
				t.Errorf("%s (pid %d) alive after kill", before.Name, before.PID)
			}
			member("restart", before.Name)
			after := recorded(t, stateDir).Instances[1]
			if after.PID == before.PID || after.Addr != before.Addr || !proc.Alive(after.PID) {
				t.Errorf("restarted %s: pid %d (was %d), addr %s (was %s)", before.Name, after.PID, before.PID, after.Addr, before.Addr)
			}
			pids = append(pids, after.PID)
			if tc.cmd == "cluster" {
				callThroughClientEnv(t, bin, stateDir)
				// A server that does not lead, killed, starts again on its
				// ports and rejoins; the instances' agent restarts.
				others := notLeading(t, stateDir)
				member("kill", others[0])
				member("restart", others[0], "client-1")
				for _, p := range recorded(t, stateDir).Consul {
					pids = append(pids, p.PID)
				}
				if want, have := 3, strings.Count(member("status"), "raft voter"); want != have {
					t.Errorf("want %d voters, have %d", want, have)
				}
				// Quorum lost: the leader alone steps down. down is quick
				// all the same.
				member(append([]string{"kill"}, notLeading(t, stateDir)...)...)
				waitNoLeader(t, stateDir)
			}
			out.Reset()
			began := time.Now()
			if err := run(context.Background(), []string{"down", "-state", stateDir}, &out, &errOut); err != nil {
				t.Fatalf("trimdev down: %v\n%s", err, out.String())
			}
			for _, pid := range pids {
				if proc.Alive(pid) {
					t.Errorf("pid %d still running after down", pid)
				}
			}
			t.Logf("down took %v:\n%s", time.Since(began).Round(time.Millisecond), out.String())
			if want := tc.processes; strings.Count(out.String(), "down: ") < want {
				t.Errorf("down output: %s", out.String())
			}
			// Only the logs and the state of what was stopped are left.
			last := filepath.Join(stateDir, lastDir)
			if want := "logs of what was stopped: " + last + "/"; !strings.Contains(out.String(), want) {
				t.Errorf("down output lacks %q:\n%s", want, out.String())
			}
			if entries, err := os.ReadDir(stateDir); err != nil || len(entries) != 1 || entries[0].Name() != lastDir {
				t.Errorf("state dir holds %v (%v), want only %s", entries, err, lastDir)
			}
			kept := recorded(t, last)
			for _, p := range append(kept.Consul, kept.Instances...) {
				rel, err := filepath.Rel(stateDir, p.Log)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(last, rel)); err != nil {
					t.Errorf("%s's log not kept: %v", p.Name, err)
				}
			}
			if tc.cmd != "up" {
				return
			}
			// They confuse neither a new start nor the next down, which
			// replaces them.
			if err := run(context.Background(), []string{tc.cmd, "-bin", bin, "-state", stateDir}, &out, &errOut); err != nil {
				t.Fatalf("trimdev %s after down: %v\n%s", tc.cmd, err, out.String())
			}
			again := recorded(t, stateDir)
			if err := run(context.Background(), []string{"down", "-state", stateDir}, &out, &errOut); err != nil {
				t.Fatalf("trimdev down: %v\n%s", err, out.String())
			}
			if want, have := again.Instances[0].PID, recorded(t, last).Instances[0].PID; want != have {
				t.Errorf("last/ records pid %d for %s, want the second start's %d", have, again.Instances[0].Name, want)
			}
		})
	}
}

func recorded(t *testing.T, dir string) state {
	t.Helper()
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// notLeading are the names of the servers that do not lead.
func notLeading(t *testing.T, dir string) []string {
	t.Helper()
	f, err := openFleet(config{state: dir})
	if err != nil {
		t.Fatal(err)
	}
	leader, err := f.leader(context.Background())
	if err != nil || leader == "" {
		t.Fatalf("leader: %q, %v", leader, err)
	}
	var others []string
	for _, s := range f.cluster.Servers {
		if s.Name != leader {
			others = append(others, s.Name)
		}
	}
	return others
}

func waitNoLeader(t *testing.T, dir string) {
	t.Helper()
	f, err := openFleet(config{state: dir})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		leader, err := f.leader(context.Background())
		if err == nil && leader == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still a leader: %q, %v", leader, err)
		}
	}
}

// With -tracing, up also leaves Jaeger running, the instances send their
// traces to it, a caller told where (as up prints) sends its own, and
// down stops it after the instances.
func TestUpWithTracing(t *testing.T) {
	bin := binDir(t)
	jaeger, err := filepath.Abs(testenv.JaegerBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(jaeger, filepath.Join(bin, "jaeger")); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	stateDir := filepath.Join(t.TempDir(), "run")
	t.Cleanup(func() { _ = down(config{state: stateDir}, &out) })
	if err := run(context.Background(), []string{"up", "-tracing", "-instances", "1", "-bin", bin, "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("trimdev up -tracing: %v\n%s", err, out.String())
	}
	st := recorded(t, stateDir)
	if st.Jaeger == nil || !proc.Alive(st.Jaeger.PID) {
		t.Fatalf("no Jaeger running after up -tracing: %+v", st.Jaeger)
	}
	if want := "traces: Jaeger http://" + st.Jaeger.Addr + "/"; !strings.Contains(out.String(), want) {
		t.Errorf("up's output lacks %q:\n%s", want, out.String())
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", st.OTLP)
	client := testenv.Start(t, filepath.Join(bin, "client"), "-consul-addr", st.HTTPAddr, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, err := client.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("a traced call: exit %d (%v)\n%s", code, err, strings.Join(client.Lines(), "\n"))
	}
	// The instance's and the caller's spans in one trace, in the
	// Jaeger up started (j: the same query API, on its address).
	j := &localjaeger.Jaeger{Query: st.Jaeger.Addr}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		traces, err := j.Traces(ctx, "trimsvc", 20)
		if err != nil {
			t.Fatal(err)
		}
		services := map[string]bool{}
		for _, tr := range traces {
			for _, s := range tr.Spans {
				services[s.Service] = true
			}
		}
		if services["trimsvc"] && services["client"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger holds no trace of the call from both within 20s: %+v", traces)
		}
	}
	if err := run(context.Background(), []string{"down", "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("trimdev down: %v\n%s", err, out.String())
	}
	if proc.Alive(st.Jaeger.PID) {
		t.Errorf("Jaeger (pid %d) still running after down", st.Jaeger.PID)
	}
	if _, err := os.Stat(filepath.Join(stateDir, lastDir, "jaeger.log")); err != nil {
		t.Errorf("Jaeger's log not kept: %v", err)
	}
}

// runMember runs the member command args[0] (kill, stop, restart,
// status) with the rest of args on what stateDir records, and returns
// its output; its errors go to stderr.
func runMember(t *testing.T, stateDir string, stderr io.Writer, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), append([]string{args[0], "-state", stateDir}, args[1:]...), &out, stderr); err != nil {
		t.Fatalf("trimdev %v: %v\n%s", args, err, out.String())
	}
	t.Logf("trimdev %v:\n%s", args, out.String())
	return out.String()
}
