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
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
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
	for name, want := range map[string]bool{
		"failed-20250102-030405/trimsvc-1.log":              true,
		"failed-20250102-030405/consul/server-1/consul.log": true,
		"failed-20250102-030405/state.json":                 true,
		"failed-20250102-030405/consul/server-1/agent.hcl":  false,
		"failed-20250102-030405/chaos/client.log":           false,
		"chaos/client.log":                                  true,
		"trimsvc-1.log":                                     false,
		"state.json":                                        false,
		"consul":                                            false,
	} {
		_, err := os.Stat(filepath.Join(dir, name))
		if have := err == nil; have != want {
			t.Errorf("%s exists: %v, want %v", name, have, want)
		}
	}

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
