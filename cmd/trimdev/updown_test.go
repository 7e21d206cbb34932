package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestPrintUpMarksOptionalTools: the commands to try that need a tool the
// setup does not (grpcurl, dig) say so, in a column of their own.
func TestPrintUpMarksOptionalTools(t *testing.T) {
	st := unequal()
	st.HTTPAddr, st.DNSPort = "http://127.0.0.1:8500", 8600
	var out bytes.Buffer
	printUp(&out, consulSetup{}, st)
	var commented []string
	for _, line := range strings.Split(out.String(), "\n") {
		for tool, note := range map[string]string{"grpcurl ": "# optional: needs grpcurl", "dig ": "# optional: needs dig (dnsutils)"} {
			if strings.HasPrefix(strings.TrimSpace(line), tool) && !strings.HasSuffix(line, note) {
				t.Errorf("%q does not end with %q", line, note)
			}
		}
		if strings.Contains(line, "  # ") {
			commented = append(commented, line)
		}
	}
	if want, have := 3, len(commented); want != have {
		t.Fatalf("want %d commands with a comment, have %d:\n%s", want, have, out.String())
	}
	col := strings.Index(commented[0], "# ")
	for _, line := range commented[1:] {
		if strings.Index(line, "# ") != col {
			t.Errorf("comments not in one column:\n%s", strings.Join(commented, "\n"))
		}
	}
}
