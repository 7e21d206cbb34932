package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestKeepLogsThenRemoveState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	files := map[string]string{
		"trimsvc-1.log":              "instance",
		"consul/server-1/consul.log": "server",
		"consul/server-1/agent.hcl":  "config",
		"state.json":                 `{"consul":[]}`,
		"chaos/state.json":           `{}`, // a setup of its own, still up
		"chaos/client.log":           "chaos",
	}
	writeFiles(t, dir, files)
	kept, err := keepLogs(dir, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "failed-20250102-030405"); kept != want {
		t.Errorf("kept in %s, want %s", kept, want)
	}
	if err := removeState(dir); err != nil {
		t.Fatal(err)
	}
	exist(t, dir, map[string]bool{
		"failed-20250102-030405/trimsvc-1.log":              true,
		"failed-20250102-030405/consul/server-1/consul.log": true,
		"failed-20250102-030405/state.json":                 true,
		"failed-20250102-030405/consul/server-1/agent.hcl":  false,
		"failed-20250102-030405/chaos/client.log":           false,
		"chaos/client.log":                                  true,
		"trimsvc-1.log":                                     false,
		"state.json":                                        false,
		"consul":                                            false,
	})

	// With nothing kept, the directory goes.
	if err := os.RemoveAll(filepath.Join(dir, "chaos")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(kept); err != nil {
		t.Fatal(err)
	}
	if err := removeState(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty state directory left: %v", err)
	}
}

func TestParseMemberCommands(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
		state   string
		members []string
	}{
		{[]string{"kill", "leader"}, false, ".run", []string{"leader"}},
		{[]string{"restart", "-state", "x", "server-1", "client-1"}, false, "x", []string{"server-1", "client-1"}},
		{[]string{"restart"}, true, "", nil},
		{[]string{"down", "server-1"}, true, "", nil},
		{[]string{"chaos"}, false, filepath.Join(".run", "chaos"), nil},
		{[]string{"chaos", "-rate", "0"}, true, "", nil},
	} {
		c, err := parseConfig(tc.args, os.Stdout)
		if (err != nil) != tc.wantErr {
			t.Errorf("%v: error %v, want error %v", tc.args, err, tc.wantErr)
			continue
		}
		if err == nil && (c.state != tc.state || len(c.args) != len(tc.members)) {
			t.Errorf("%v: state %q members %q, want %q %q", tc.args, c.state, c.args, tc.state, tc.members)
		}
	}
}

// writeFiles writes each file of files, a path below dir and its content.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// exist checks, for each path below dir, whether it exists as want says.
func exist(t *testing.T, dir string, want map[string]bool) {
	t.Helper()
	for name, want := range want {
		_, err := os.Stat(filepath.Join(dir, name))
		if have := err == nil; have != want {
			t.Errorf("%s exists: %v, want %v", name, have, want)
		}
	}
}

// TestKeepLastThenRemoveState is what down does once everything has
// stopped: the logs and the state of a cluster go to last/, replacing an
// earlier down's; the rest of the cluster goes; the logs of failed runs,
// setups of their own (recorded or not yet) and a user's files stay; and
// what is left confuses neither a new start nor a failed one.
func TestKeepLastThenRemoveState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	writeFiles(t, dir, map[string]string{
		"state.json":                              `{"consul":[]}`,
		"trimsvc-1.log":                           "instance",
		"client.token":                            "secret",
		"client.env":                              "export CONSUL_HTTP_ADDR=x",
		"service-ca/ca.pem":                       "ca",
		"consul/cluster.json":                     `{"management_token":"secret"}`,
		"consul/ca/consul-agent-ca.pem":           "ca",
		"consul/server-1/consul.log":              "server",
		"consul/server-1/agent.hcl":               "config",
		"consul/server-1/data/raft/raft.db":       "raft",
		"last/state.json":                         `{"consul":[]}`, // an earlier down's
		"last/trimsvc-9.log":                      "earlier",
		"failed-20250101-000000/trimsvc-1.log":    "failed start",
		"chaos/failed-20250101-000000/client.log": "failed soak",
		"walkthrough/trimsvc-1.log":               "a setup of its own, starting: no state yet",
		"walkthrough/consul/server-1/consul.log":  "its server",
		"notes/todo.txt":                          "a user's",
	})
	last, err := keepLast(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "last"); last != want {
		t.Errorf("kept in %s, want %s", last, want)
	}
	if err := removeState(dir); err != nil {
		t.Fatal(err)
	}
	exist(t, dir, map[string]bool{
		"last/state.json":                         true,
		"last/trimsvc-1.log":                      true,
		"last/consul/server-1/consul.log":         true,
		"last/trimsvc-9.log":                      false, // replaced
		"last/consul/cluster.json":                false, // holds tokens
		"last/failed-20250101-000000":             false,
		"failed-20250101-000000/trimsvc-1.log":    true,
		"chaos/failed-20250101-000000/client.log": true,
		"walkthrough/trimsvc-1.log":               true,
		"walkthrough/consul/server-1/consul.log":  true,
		"last/walkthrough":                        false,
		"notes/todo.txt":                          true,
		"state.json":                              false,
		"trimsvc-1.log":                           false,
		"client.token":                            false,
		"client.env":                              false,
		"service-ca":                              false,
		"consul":                                  false,
	})
	// A new start sees nothing up.
	if _, err := readState(dir); !errors.Is(err, errNotUp) {
		t.Errorf("read the state after down: %v, want %v", err, errNotUp)
	}
	// A failed start keeps its own logs, not the last down's, and leaves
	// those.
	writeFiles(t, dir, map[string]string{"state.json": `{"consul":[]}`, "trimsvc-1.log": "failed again"})
	kept, err := keepLogs(dir, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if err := removeState(dir); err != nil {
		t.Fatal(err)
	}
	exist(t, kept, map[string]bool{"trimsvc-1.log": true, "last": false})
	if b, err := os.ReadFile(filepath.Join(last, "trimsvc-1.log")); err != nil || string(b) != "instance" {
		t.Errorf("last/trimsvc-1.log: %q, %v; want the stopped instance's log", b, err)
	}
}
