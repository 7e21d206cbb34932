package main

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// cellStarts are where the cells of a line of columns begin: a cell is
// words with single spaces between them, and columns are two or more
// spaces apart.
func cellStarts(line string) []int {
	var starts []int
	for _, loc := range regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(line, -1) {
		starts = append(starts, loc[0])
	}
	return starts
}

// aligned checks that every line of lines has its cells where the first
// line has them.
func aligned(t *testing.T, lines []string) {
	t.Helper()
	want := cellStarts(lines[0])
	for _, line := range lines[1:] {
		if have := cellStarts(line); !slices.Equal(want, have) {
			t.Errorf("columns not aligned: cells at %v, want %v:\n%s", have, want, strings.Join(lines, "\n"))
			return
		}
	}
}

// unequal is a setup whose names, PIDs and addresses differ in length, and
// none of whose processes runs.
func unequal() state {
	return state{
		Consul: []stateProc{
			{Name: "server-1", PID: 7, Exe: "/nonexistent/consul", Addr: "127.0.0.1:8500"},
			{Name: "a-client-agent-named-at-length", PID: 4194303, Exe: "/nonexistent/consul", Addr: "[2001:db8::1]:65535"},
			{Name: "c", PID: 12345, Exe: "/nonexistent/consul"},
		},
		Instances: []stateProc{
			{Name: "trimsvc-1", ID: "trimsvc-1", PID: 99, Exe: "/nonexistent/trimsvc", Addr: "127.0.0.1:1"},
			{Name: "trimsvc-10", ID: "trimsvc-an-id-much-longer-than-the-others-are", PID: 4194302, Exe: "/nonexistent/trimsvc",
				Addr: "some-host.example.com:40000", Log: "/tmp/trimsvc-10.log"},
		},
	}
}

func TestStatusColumnsAlign(t *testing.T) {
	f := &fleet{dir: ".run", st: unequal()}
	var out bytes.Buffer
	_ = f.status(context.Background(), &out) // no agent runs: the table all the same
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if want, have := 1+len(f.st.Consul)+len(f.st.Instances), len(lines); have < want {
		t.Fatalf("want at least %d lines, have %d:\n%s", want, have, out.String())
	}
	table := lines[:1+len(f.st.Consul)+len(f.st.Instances)]
	aligned(t, table)
	for i, want := range []string{"member", "c ", "trimsvc-10 "} {
		if row := table[[]int{0, 3, 5}[i]]; !strings.HasPrefix(row, want) {
			t.Errorf("row %q, want it to start with %q", row, want)
		}
	}
	if !strings.Contains(out.String(), "dead") {
		t.Errorf("no member dead:\n%s", out.String())
	}
}

func TestPrintInstancesColumnsAlign(t *testing.T) {
	var out bytes.Buffer
	printInstances(&out, unequal())
	aligned(t, strings.Split(strings.TrimRight(out.String(), "\n"), "\n"))
}
