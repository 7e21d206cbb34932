package main

import (
	"bytes"
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/proc"
)

// TestClusterTwoDatacenters leaves the cluster of `make cluster DCS=2`
// running: two secure datacenters, WAN-federated. Each knows both, the
// callers' token reads dc2's instances through dc1's client agent 2 (as
// the load of `make chaos DCS=2` does), a caller with client.env calls,
// dc2's leader is killed and started again by name, and down stops every
// process of both datacenters, keeping their logs.
func TestClusterTwoDatacenters(t *testing.T) {
	bin := binDir(t)
	var out, errOut bytes.Buffer
	stateDir := filepath.Join(t.TempDir(), "run")
	t.Cleanup(func() { _ = down(config{state: stateDir}, io.Discard) }) // also on failure
	t.Cleanup(func() {                                                  // before down, which removes them
		if t.Failed() {
			logTails(t, stateDir)
		}
	})
	began := time.Now()
	if err := run(context.Background(), []string{"cluster", "-dcs", "2", "-bin", bin, "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("trimdev cluster -dcs 2: %v\n%s", err, out.String())
	}
	t.Logf("two datacenters up in %v", time.Since(began).Round(time.Millisecond))
	for _, want := range []string{"dc2-server-1", "dc2-client-2", "dc2-trimsvc-3", "callers ask client-2 of dc1",
		"go run ./cmd/client -datacenters dc1,dc2 ", "kill -state STATE trimsvc-1 trimsvc-2 trimsvc-3",
		"restart -state STATE dc2-server-1 dc2-server-2 dc2-server-3", "?dc=dc2&passing=1"} {
		if want = strings.ReplaceAll(want, "STATE", stateDir); !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "{{") {
		t.Errorf("output holds a step left unfilled:\n%s", out.String())
	}

	st := recorded(t, stateDir)
	if want := []string{"dc1", "dc2"}; !slices.Equal(want, st.Datacenters) || !slices.Equal(want, st.Caller.Datacenters) {
		t.Errorf("datacenters %q, the callers' %q, want %q", st.Datacenters, st.Caller.Datacenters, want)
	}
	var pids []int
	perDC := map[string]int{}
	for _, p := range append(st.Consul, st.Instances...) {
		pids = append(pids, p.PID)
		perDC[p.Datacenter]++
		if !proc.Alive(p.PID) {
			t.Errorf("%s (pid %d) not running after cluster", p.Name, p.PID)
		}
		if dc2 := strings.HasPrefix(p.Name, "dc2-"); dc2 != (p.Datacenter == "dc2") {
			t.Errorf("%s recorded in %q", p.Name, p.Datacenter)
		}
	}
	if want := map[string]int{"dc1": 5 + 3, "dc2": 5 + 3}; !maps.Equal(want, perDC) {
		t.Fatalf("processes by datacenter: %v, want %v", perDC, want)
	}
	if env, err := os.ReadFile(filepath.Join(stateDir, "client.env")); err != nil || !strings.Contains(string(env), "export TRIMCLIENT_DATACENTERS=dc1,dc2\n") {
		t.Errorf("client.env (%v):\n%s", err, env)
	}

	// Each side knows both datacenters.
	f, err := openFleet(config{state: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range f.clusters() {
		a := c.Clients[len(c.Clients)-1]
		api, err := a.API()
		if err != nil {
			t.Fatal(err)
		}
		have, err := api.Catalog().Datacenters()
		if slices.Sort(have); err != nil || !slices.Equal(have, []string{"dc1", "dc2"}) {
			t.Errorf("%s knows the datacenters %q (%v), want dc1 and dc2", a.Name, have, err)
		}
	}
	// The callers' token, through dc1's client agent 2, reads each
	// datacenter's instances.
	caller := callerAPI(t, st.Caller)
	for dc, want := range map[string][]string{"dc1": {"trimsvc-1", "trimsvc-2", "trimsvc-3"}, "dc2": {"dc2-trimsvc-1", "dc2-trimsvc-2", "dc2-trimsvc-3"}} {
		entries, _, err := caller.Health().Service("trimsvc", "", true, &api.QueryOptions{Datacenter: dc})
		var have []string
		for _, e := range entries {
			have = append(have, e.Service.ID)
		}
		if slices.Sort(have); err != nil || !slices.Equal(want, have) {
			t.Errorf("%s's passing instances through client-2 with the callers' token: %q (%v), want %q", dc, have, err, want)
		}
	}
	callThroughClientEnv(t, bin, stateDir)

	// dc2's leader, by name: killed, another of dc2 leads; started again.
	member := func(args ...string) string { return runMember(t, stateDir, &errOut, args...) }
	killed := member("kill", "dc2-leader")
	name, _, _ := strings.Cut(strings.TrimPrefix(killed, "kill: "), " ")
	if !strings.HasPrefix(name, "dc2-server-") || !strings.Contains(killed, "leads now") {
		t.Fatalf("kill dc2-leader: %s", killed)
	}
	member("restart", name)
	if status := member("status"); strings.Count(status, "raft voter") != 6 || strings.Count(status, ", leader") != 2 {
		t.Errorf("want 6 voters and 2 leaders:\n%s", status)
	}
	for _, p := range recorded(t, stateDir).Consul {
		pids = append(pids, p.PID)
	}

	out.Reset()
	if err := run(context.Background(), []string{"down", "-state", stateDir}, &out, &errOut); err != nil {
		t.Fatalf("trimdev down: %v\n%s", err, out.String())
	}
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("pid %d still running after down", pid)
		}
	}
	if entries, err := os.ReadDir(stateDir); err != nil || len(entries) != 1 || entries[0].Name() != lastDir {
		t.Errorf("state dir holds %v (%v), want only %s", entries, err, lastDir)
	}
	for _, p := range append(st.Consul, st.Instances...) {
		rel, err := filepath.Rel(stateDir, p.Log)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(stateDir, lastDir, rel)); err != nil {
			t.Errorf("%s's log not kept: %v", p.Name, err)
		}
	}
}

// callerAPI is a Consul API client as a caller of the cluster has it:
// the callers' agent, token and certificate.
func callerAPI(t *testing.T, cf *callerFiles) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.TokenFile = cf.ConsulAddr, cf.TokenFile
	cfg.TLSConfig = api.TLSConfig{CAFile: cf.ConsulCA, CertFile: cf.ConsulCert, KeyFile: cf.ConsulKey}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// -dcs 2 is for the cluster and the chaos soak (its deck, not the
// walkthrough's steps, which expect callers of dc1 alone).
func TestParseDatacenters(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"cluster"}, true},
		{[]string{"cluster", "-dcs", "2"}, true},
		{[]string{"chaos", "-dcs", "2"}, true},
		{[]string{"cluster", "-dcs", "3"}, false},
		{[]string{"cluster", "-dcs", "0"}, false},
		{[]string{"up", "-dcs", "2"}, false},
		{[]string{"run", "-dcs", "2"}, false},
		{[]string{"walkthrough", "-dcs", "2"}, false},
		{[]string{"chaos", "-dcs", "2", "-sequence", "walkthrough"}, false},
	} {
		cfg, err := parseConfig(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok %t", tc.args, err, tc.ok)
		}
		if err == nil && cfg.dcs < 1 {
			t.Errorf("%q: -dcs %d", tc.args, cfg.dcs)
		}
	}
}

// down gives the processes of a datacenter without a leader a short
// grace, and the others' the usual one.
func TestGraceOutsideLeaderlessDatacenters(t *testing.T) {
	for _, tc := range []struct {
		leaderless []string
		dc         string
		want       time.Duration
	}{
		{nil, "", downGrace},
		{[]string{""}, "", downGraceNoLeader},
		{[]string{"dc2"}, "dc1", downGrace},
		{[]string{"dc2"}, "dc2", downGraceNoLeader},
		{[]string{"dc1", "dc2"}, "dc1", downGraceNoLeader},
	} {
		if have := graceOutside(tc.leaderless)(stateProc{Datacenter: tc.dc}); have != tc.want {
			t.Errorf("leaderless %q, a process of %q: grace %v, want %v", tc.leaderless, tc.dc, have, tc.want)
		}
	}
}
